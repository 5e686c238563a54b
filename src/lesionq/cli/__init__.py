"""lesionq.cli."""
