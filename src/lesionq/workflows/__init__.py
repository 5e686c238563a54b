"""lesionq.workflows."""
