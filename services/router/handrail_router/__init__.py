"""The router: validates submitted tasks, opens them, and hands step 1 to its agent."""
