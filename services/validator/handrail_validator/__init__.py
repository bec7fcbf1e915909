"""The validator: checks each step's output and moves the task on, or ends it."""
