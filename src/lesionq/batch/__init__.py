"""lesionq.batch."""
