"""The human-review service: the async approval queue that resumes tasks from their exact checkpoint."""
