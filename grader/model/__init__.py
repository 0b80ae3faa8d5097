"""The course's data: assignments, their config, submissions, results. Imports nothing else of grader."""
