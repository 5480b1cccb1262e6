"""Day 7: the whole system, end to end: the $1,000 trace and its reliability."""
