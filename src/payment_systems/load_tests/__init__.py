"""Load testing: an open-loop generator, its reports, and the capacity search."""
