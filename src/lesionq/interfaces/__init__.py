"""lesionq.interfaces."""
