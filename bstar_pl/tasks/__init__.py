"""Tasks: problem sources, answer extraction and grading."""
