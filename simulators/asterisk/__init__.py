"""The Asterisk simulator: a caller that drives the FastAGI server
(`caller.py`, `telecom-pay handset call`) and an AMI server."""
