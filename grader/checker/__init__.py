"""The trusted checker: runs inside its sandbox beside the student's kernel; imports grader.model only."""
