"""The carrier's top-up system, as the airtime SP's endpoint: it receives
the platform's signed `airtime.ordered` callbacks and credits the number
(here: records the top-up), once per event."""
