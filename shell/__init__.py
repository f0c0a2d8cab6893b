"""The imperative shell: argument handling, workflows and the process model."""
