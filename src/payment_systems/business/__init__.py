"""Business-impact calculators behind the site's ROI figures."""
