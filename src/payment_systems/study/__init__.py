"""The week-1 study plan as data, for the site, the tracker and the tests."""
