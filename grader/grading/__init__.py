"""The batch and its executors: stage, execute, check and score one submission."""
