"""The echo ESME reads deliver_sm and writes submit_sm by hand (it must cost
less than the load generator it measures): both must agree with the
project's codec, or the harness ceiling would be measured on PDUs the
platform never sees."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.echo_esme import EchoBind, read_deliver_sm, submit_sm
from channels.smpp import pdu as P
from channels.smpp.text import decode_message, split_message

addresses = st.text(alphabet="0123456789", min_size=1, max_size=20)
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=60)


@settings(max_examples=100, deadline=None)
@given(source=addresses, destination=addresses, text=texts, ref=st.integers(0, 255),
       receipt=st.booleans(), service_type=st.sampled_from(["", "CMT", "USSD"]),
       umr=st.one_of(st.none(), st.integers(0, 255)))
def test_read_deliver_sm_agrees_with_decode_pdu(source, destination, text, ref, receipt, service_type, umr):
    part = split_message(text, ref)[0]
    esm_class = part.esm_class | (P.ESM_CLASS_DELIVERY_RECEIPT if receipt else 0)
    fields = dict(service_type=service_type, source_addr_ton=1, source_addr_npi=1, source_addr=source,
                  dest_addr_ton=0, dest_addr_npi=1, destination_addr=destination, esm_class=esm_class,
                  data_coding=part.data_coding, short_message=part.short_message)
    if umr is not None:
        fields["user_message_reference"] = umr
    raw = P.encode_pdu("deliver_sm", 7, **fields)
    pdu = P.decode_pdu(raw)
    assert read_deliver_sm(raw) == (pdu.source_addr, pdu.esm_class, pdu.data_coding, pdu.short_message)


@settings(max_examples=100, deadline=None)
@given(source=addresses, destination=addresses, text=texts, sequence=st.integers(1, 0x7FFFFFFF))
def test_submit_sm_decodes_to_what_was_meant(source, destination, text, sequence):
    for part in split_message(text, 9):
        pdu = P.decode_pdu(submit_sm(sequence, source, destination, part))
        assert pdu.command == "submit_sm" and pdu.sequence == sequence and pdu.status == 0
        assert (pdu.source_addr, pdu.destination_addr) == (source, destination)
        assert pdu.registered_delivery == P.REGISTERED_DELIVERY_RECEIPT
        assert (pdu.esm_class, pdu.data_coding, pdu.short_message) == (part.esm_class, part.data_coding,
                                                                       part.short_message)
    if len(split_message(text, 9)) == 1:
        assert decode_message(pdu).text == text


def test_answers_look_like_the_platform():
    """The load generator's checks (prompt, reference, balance) pass on the echo's answers."""
    from benchmarks.smsc_load import BALANCE, PROMPT, REFERENCE

    from benchmarks.echo_esme import EchoEsme

    class Args:
        system_id, password, window, source_addr = "telecom-pay", "secret", 10, "10658888"
    bind = EchoBind.__new__(EchoBind)
    bind.esme = EchoEsme(Args())
    prompt = bind.answer("8613900000001", "ZF M888 12.34")
    assert PROMPT.search(prompt) and "12.34" in prompt
    confirmation = bind.answer("8613900000001", "258147")
    assert REFERENCE.search(confirmation) and "12.34" in confirmation
    assert BALANCE.search(bind.answer("8613900000001", "ye"))
    assert not PROMPT.search(bind.answer("8613900000001", "hello"))
