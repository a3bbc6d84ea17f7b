"""The Flask app for marketers and website engineers (issue 5)."""
