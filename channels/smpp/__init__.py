"""SMPP 3.4: the shared PDU codec (`pdu`), SMS text coding (`text`) and the ESME channel."""
