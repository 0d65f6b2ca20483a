"""What runs a capture: job specs and budgets, the job-kind registry, the local worker thread."""
