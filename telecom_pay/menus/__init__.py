"""One menu tree, as data, rendered as USSD pages or IVR prompts (DESIGN
section 2): the engine walks it, each channel renders its screens."""
