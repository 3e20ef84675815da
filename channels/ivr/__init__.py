"""The voice channel: a FastAGI server that runs the menu for callers
(`channels.ivr.app`, the protocol in `channels.ivr.agi`) and an AMI client
for call-backs and call events (`channels.ivr.ami`)."""
