"""The one SMPP 3.4 PDU codec, shared by the ESME channel and the SMSC simulator.

smpplib's PDU classes are the codec; this module wraps them so that neither
side trips over smpplib's traps (see NOTES-packages.md):

* `encode_pdu` builds with a throwaway sequence source and then sets the header
  sequence explicitly (smpplib's ``sequence=`` keyword does not reach the
  header), sets every field after construction (smpplib's bind constructor
  would otherwise overwrite ``interface_version``), accepts ``str`` or
  ``bytes`` for C-string fields, and refuses values smpplib would silently
  truncate or mis-pack.
* `decode_pdu` validates the body itself before smpplib sees it: smpplib
  reads C-strings past the end of a truncated body, trusts a TLV's declared
  size over its length field, and raises KeyError on a TLV that is known in
  general but not to the command (the ``ussd_service_op`` in ``deliver_sm``
  trap). Mandatory fields are parsed by smpplib; TLVs are read by length here
  and set on the smpplib object, unknown ones kept in ``pdu.unknown_tlvs``.
  C-string fields come back as ``str``; ``short_message`` and
  ``message_payload`` stay ``bytes``. Decoding never touches a shared
  sequence counter.
* The PDUs of every payment and of link keeping (deliver_sm, submit_sm,
  their responses, enquire_link, enquire_link_resp, generic_nack) skip
  smpplib's objects: a struct encoder and decoder built from smpplib's field
  tables gives the same bytes and the same attributes at a tenth of the CPU
  (see "the fast path" below; the smpplib path stays as
  ``_encode_pdu_smpplib`` / ``_decode_pdu_smpplib``, the reference of the
  property tests).
* At import, the USSD TLVs ``ussd_service_op`` (0x0501, 1 octet),
  ``its_session_info`` (0x1383, 2 octets) and ``its_reply_type`` (0x1380)
  are registered on smpplib's submit_sm, deliver_sm and data_sm classes
  (`_register_ussd_tlvs`). The patch is process-wide on purpose: smpplib's own
  client in the same process then understands USSD deliver_sm as well.
"""
from __future__ import annotations

import struct

from smpplib import command as _command
from smpplib import command_codes as _command_codes
from smpplib import consts as _consts
from smpplib import exceptions as _smpp_exceptions
from smpplib import smpp as _smpp
from smpplib.ptypes import flag as _flag
from smpplib.ptypes import ostr as _ostr

__all__ = [
    "PduError",
    "FramingError",
    "PduReader",
    "encode_pdu",
    "decode_pdu",
    "generic_nack",
    "command_id_of",
    "response_name",
    "HEADER_LENGTH",
    "MAX_PDU_LENGTH",
]

HEADER_LENGTH = 16
#: Largest PDU accepted from a peer. SMPP bodies are small (a submit_sm with
#: a full message_payload is well under 1 KiB); anything bigger is a framing
#: error or an attack, and the connection is dropped.
MAX_PDU_LENGTH = 64 * 1024

# --- command status (SMPP 3.4 section 5.1.3) -------------------------------
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RINVMSGID = 0x0C
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RINVESMCLASS = 0x43
ESME_RSUBMITFAIL = 0x45
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RX_P_APPN = 0x65
ESME_RX_R_APPN = 0x66
ESME_RINVOPTPARSTREAM = 0xC0
ESME_RINVPARLEN = 0xC2
ESME_RINVOPTPARAMVAL = 0xC4
ESME_RDELIVERYFAILURE = 0xFE
ESME_RUNKNOWNERR = 0xFF

# --- esm_class bits ---------------------------------------------------------
ESM_CLASS_DEFAULT = 0x00
ESM_CLASS_DELIVERY_RECEIPT = 0x04  # message type: SMSC delivery receipt
ESM_CLASS_INTERMEDIATE_NOTIFICATION = 0x20
ESM_CLASS_UDHI = 0x40  # short_message starts with a user data header
ESM_CLASS_REPLY_PATH = 0x80
ESM_CLASS_TYPE_MASK = 0x3C

# --- data_coding ------------------------------------------------------------
DATA_CODING_GSM = 0x00  # SMSC default alphabet, here always GSM 03.38
DATA_CODING_ASCII = 0x01
DATA_CODING_BINARY = 0x02
DATA_CODING_LATIN1 = 0x03
DATA_CODING_BINARY_4 = 0x04
DATA_CODING_UCS2 = 0x08

# --- registered_delivery ----------------------------------------------------
REGISTERED_DELIVERY_NONE = 0x00
REGISTERED_DELIVERY_RECEIPT = 0x01  # receipt on final outcome, success or failure
REGISTERED_DELIVERY_RECEIPT_ON_FAILURE = 0x02
REGISTERED_DELIVERY_MASK = 0x03

# --- message_state (receipts, query_sm) -------------------------------------
MESSAGE_STATE_ENROUTE = 1
MESSAGE_STATE_DELIVERED = 2
MESSAGE_STATE_EXPIRED = 3
MESSAGE_STATE_DELETED = 4
MESSAGE_STATE_UNDELIVERABLE = 5
MESSAGE_STATE_ACCEPTED = 6
MESSAGE_STATE_UNKNOWN = 7
MESSAGE_STATE_REJECTED = 8

# --- USSD (ussd_service_op values) ------------------------------------------
USSD_PSSD_IND = 0x00
USSD_PSSR_IND = 0x01  # subscriber dialled a code: session begins
USSD_USSR_REQ = 0x02  # platform asks, session continues
USSD_USSN_REQ = 0x03
USSD_PSSD_RESP = 0x10
USSD_PSSR_RESP = 0x11  # platform's final text, session ends
USSD_USSR_CONF = 0x12  # subscriber's answer to a USSR request
USSD_USSN_CONF = 0x13
USSD_USER_ABORT = 0x81  # common vendor value

TLV_USSD_SERVICE_OP = 0x0501
TLV_ITS_SESSION_INFO = 0x1383
TLV_ITS_REPLY_TYPE = 0x1380

#: Fields that carry octets (message content), kept as bytes on decode.
OCTET_FIELDS = frozenset({"short_message", "message_payload"})

#: Commands that may be sent without a body or with a shortened body when
#: they are responses (SMPP 3.4: error responses carry no body; many SMSCs
#: also omit the unused message_id of deliver_sm_resp).
_RESPONSE_BIT = 0x80000000


class PduError(Exception):
    """A PDU that cannot be decoded.

    ``command_id`` and ``sequence`` are read from the header when there is
    one (0 otherwise); ``status`` is the SMPP command status to answer with in
    a ``generic_nack`` (or in the response to the request).
    """

    def __init__(self, command_id: int, sequence: int, status: int, message: str = ""):
        super().__init__(
            message or f"bad PDU (command_id=0x{command_id:08x}, sequence={sequence}, status=0x{status:02x})"
        )
        self.command_id = command_id
        self.sequence = sequence
        self.status = status

    @property
    def is_response(self) -> bool:
        """True when the bad PDU was itself a response: never nack a response."""
        return bool(self.command_id & _RESPONSE_BIT)


class FramingError(Exception):
    """The byte stream cannot be framed into PDUs; drop the connection."""


class _NoSequence:
    """Sequence source for smpplib that never advances anything.

    smpplib asks the client for ``next_sequence()`` whenever it builds a
    request object, even when parsing; the header sequence is set explicitly
    afterwards, so this always answers 0.
    """

    sequence = 0

    @staticmethod
    def next_sequence() -> int:
        return 0


_NO_SEQUENCE = _NoSequence()


def _register_ussd_tlvs() -> None:
    """Teach smpplib's message classes the USSD TLVs (idempotent).

    smpplib's DeliverSM and DataSM lack ``ussd_service_op`` (and DeliverSM
    ``its_reply_type``), so a USSD deliver_sm fails to parse and the field is
    silently dropped on generate. The classes' own ``params`` dicts are
    extended in place; ``OPTIONAL_PARAMS`` already knows the tags.
    """
    wanted = {
        "ussd_service_op": _command.Param(type=int, size=1),
        "its_session_info": _command.Param(type=int, size=2),
        "its_reply_type": _command.Param(type=int, size=1),
    }
    for cls in (_command.SubmitSM, _command.DeliverSM, _command.DataSM):
        if "params" not in cls.__dict__:  # never mutate an inherited dict
            cls.params = dict(cls.params)
        order = list(cls.params_order)
        for name, param in wanted.items():
            if name not in cls.params:
                cls.params[name] = param
            if name not in order:
                order.append(name)
        cls.params_order = tuple(order)
    assert _consts.OPTIONAL_PARAMS["ussd_service_op"] == TLV_USSD_SERVICE_OP
    assert _consts.OPTIONAL_PARAMS["its_session_info"] == TLV_ITS_SESSION_INFO


_register_ussd_tlvs()

_TLV_NAMES = {code: name for name, code in _consts.OPTIONAL_PARAMS.items()}


def command_id_of(command: str) -> int:
    """The numeric command_id of a command name ('submit_sm' -> 4)."""
    try:
        return _command_codes.get_command_code(command)
    except _smpp_exceptions.UnknownCommandError:
        raise ValueError(f"unknown SMPP command {command!r}") from None


def response_name(command: str) -> str:
    """The name of the response to a request ('submit_sm' -> 'submit_sm_resp')."""
    if command.endswith("_resp") or command == "generic_nack":
        raise ValueError(f"{command!r} is not a request")
    return command + "_resp"


def _is_optional(cls, name: str) -> bool:
    return name in _consts.OPTIONAL_PARAMS and name not in getattr(cls, "mandatory_fields", ())


def _coerce_field(command: str, name: str, param, value, optional: bool):
    """Normalise and check one field value for smpplib's generator."""
    if value is None:
        return None
    if param.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{command}.{name} must be an int, got {type(value).__name__}")
        size = getattr(param, "size", 1)
        if not 0 <= value < (1 << (8 * size)):
            raise ValueError(f"{command}.{name}={value} does not fit {size} octet(s)")
        return value
    if param.type is str:
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("latin-1")
        if not isinstance(value, str):
            raise TypeError(f"{command}.{name} must be str or bytes, got {type(value).__name__}")
        if "\x00" in value:
            raise ValueError(f"{command}.{name} must not contain NUL")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{command}.{name} must be ASCII/Latin-1 (C-Octet String)") from None
        if optional and not value.isascii():
            # smpplib writes a C-string TLV as UTF-8 but counts its length in
            # characters: anything past ASCII would go out as a corrupt TLV.
            raise ValueError(f"{command}.{name} must be ASCII (a C-Octet String TLV)")
        limit = getattr(param, "max", None)
        if limit is not None and len(value) > limit - 1:
            raise ValueError(f"{command}.{name} longer than {limit - 1} characters")
        return value
    if param.type is _ostr:
        if isinstance(value, str):
            raise TypeError(
                f"{command}.{name} takes bytes; encode text with channels.smpp.text "
                "(split_message / encode_text) first"
            )
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"{command}.{name} must be bytes, got {type(value).__name__}")
        value = bytes(value)
        if name == "short_message" and len(value) > 254:
            raise ValueError("short_message longer than 254 octets; split it or use message_payload")
        if optional and len(value) > 0xFFFF:
            raise ValueError(f"{command}.{name} longer than a TLV can carry")
        return value
    raise TypeError(f"{command}.{name} cannot be generated (flag TLVs are not supported)")


def _encode_pdu_smpplib(command: str, sequence: int, status: int = ESME_ROK, **fields) -> bytes:
    """Encode one PDU with smpplib (the reference the fast encoder is tested against).

    ``command`` is an smpplib command name ('bind_transceiver', 'submit_sm',
    'deliver_sm_resp', ...). ``sequence`` goes into the header as given (a
    response echoes its request's). Unknown field names, out-of-range ints and
    over-long strings raise ValueError/TypeError instead of being dropped or
    truncated.
    """
    if not 0 <= sequence <= 0xFFFFFFFF:
        raise ValueError(f"sequence {sequence} out of range")
    if not 0 <= status <= 0xFFFFFFFF:
        raise ValueError(f"status {status} out of range")
    command_id_of(command)  # clear error for a bad name
    try:
        pdu = _smpp.make_pdu(command, client=_NO_SEQUENCE, allow_unknown_opt_params=True)
    except _smpp_exceptions.UnknownCommandError:
        raise ValueError(f"smpplib cannot build {command!r}") from None
    cls = type(pdu)
    for name, value in fields.items():
        param = cls.params.get(name)
        if param is None:
            raise ValueError(f"{command} has no field {name!r}")
        setattr(pdu, name, _coerce_field(command, name, param, value, _is_optional(cls, name)))
    pdu.sequence = sequence
    pdu.status = status
    try:
        return pdu.generate()
    except (struct.error, TypeError, ValueError) as exc:  # pragma: no cover - guarded above
        raise ValueError(f"cannot encode {command}: {exc}") from exc


def generic_nack(sequence: int, status: int) -> bytes:
    """A generic_nack echoing ``sequence`` with ``status``."""
    return encode_pdu("generic_nack", sequence, status)


def _walk_mandatory(cls, body: bytes, is_response: bool, fail) -> int:
    """Check the mandatory fields of ``body``; return where the TLVs begin.

    Mirrors smpplib's ``parse_params`` but never reads past the end: a
    C-string must be NUL-terminated, an int must be
    whole, an octet string must fit the body. A body may stop at a field
    boundary only for responses (error responses carry no body).
    """
    pos = 0
    end = len(body)
    values: dict[str, int] = {}
    for name in cls.params_order:
        if _is_optional(cls, name):
            break
        param = cls.params[name]
        if pos == end:
            if is_response:
                return pos
            if param.type is _ostr and values.get(param.len_field, 0) == 0:
                # sm_length 0: the empty short_message takes no octets, so
                # nothing is missing (an empty SMS, or text in message_payload).
                continue
            fail(ESME_RINVCMDLEN, f"body ends before mandatory field {name}")
        if param.type is int:
            size = param.size
            if pos + size > end:
                fail(ESME_RINVCMDLEN, f"{name} truncated")
            values[name] = int.from_bytes(body[pos:pos + size], "big")
            pos += size
        elif param.type is str:
            # Lenient on over-long values (sloppy peers exist), strict on
            # a missing terminator: that is a truncated body.
            nul = body.find(b"\x00", pos)
            if nul < 0:
                fail(ESME_RINVCMDLEN, f"{name} not NUL-terminated")
            pos = nul + 1
        elif param.type is _ostr:
            length = values.get(param.len_field, 0)
            if pos + length > end:
                fail(ESME_RINVCMDLEN, f"{name} longer than the body")
            pos += length
    return pos


def _read_tlvs(pdu, cls, data: bytes, fail) -> None:
    """Read the TLV section by length and set known ones on the smpplib object."""
    pos = 0
    end = len(data)
    unknown: list[tuple[int, bytes]] = []
    while pos < end:
        if pos + 4 > end:
            fail(ESME_RINVOPTPARSTREAM, "truncated TLV header")
        tag, length = struct.unpack_from(">HH", data, pos)
        pos += 4
        if pos + length > end:
            fail(ESME_RINVOPTPARSTREAM, f"TLV 0x{tag:04x} longer than the body")
        value = data[pos:pos + length]
        pos += length
        name = _TLV_NAMES.get(tag)
        param = cls.params.get(name) if name else None
        if param is None:
            unknown.append((tag, value))
            continue
        if param.type is int:
            if length == 0 or length > 4:
                fail(ESME_RINVPARLEN, f"TLV {name} has length {length}")
            setattr(pdu, name, int.from_bytes(value, "big"))
        elif param.type is str:
            setattr(pdu, name, value.split(b"\x00", 1)[0].decode("latin-1"))
        elif param.type is _ostr:
            setattr(pdu, name, value)
        elif param.type is _flag:
            setattr(pdu, name, True)
    pdu.unknown_tlvs = unknown


def _decode_pdu_smpplib(raw: bytes):
    """Decode one whole PDU with smpplib (the reference the fast decoder is tested against).

    The object has ``command`` (name), ``sequence``, ``status``, the command's
    fields (None when absent), C-strings as ``str``, ``short_message`` /
    ``message_payload`` as ``bytes``, and ``unknown_tlvs`` (a list of
    ``(tag, value)``). Raises `PduError` with the status to answer with.
    """
    raw = bytes(raw)
    if len(raw) < HEADER_LENGTH:
        raise PduError(0, 0, ESME_RINVCMDLEN, f"PDU shorter than its header ({len(raw)} octets)")
    length, command_id, status, sequence = struct.unpack_from(">LLLL", raw, 0)

    def fail(code: int, why: str):
        raise PduError(command_id, sequence, code, f"command_id 0x{command_id:08x} seq {sequence}: {why}")

    if length != len(raw):
        fail(ESME_RINVCMDLEN, f"command_length {length} but {len(raw)} octets")
    try:
        name = _command_codes.get_command_name(command_id)
        pdu = _smpp.make_pdu(name, client=_NO_SEQUENCE, allow_unknown_opt_params=True)
    except _smpp_exceptions.UnknownCommandError:
        fail(ESME_RINVCMDID, "unknown or unsupported command id")
    cls = type(pdu)
    body = raw[HEADER_LENGTH:]
    mandatory_end = _walk_mandatory(cls, body, bool(command_id & _RESPONSE_BIT), fail)
    try:
        pdu.parse(raw[:HEADER_LENGTH + mandatory_end])
    except Exception as exc:  # smpplib on a body we validated: report, never crash
        fail(ESME_RSYSERR, f"smpplib could not parse: {exc!r}")
    pdu.length = length
    pdu.sequence = sequence
    pdu.status = status
    _read_tlvs(pdu, cls, body[mandatory_end:], fail)
    for field, param in cls.params.items():
        if param.type is str and field not in OCTET_FIELDS:
            value = getattr(pdu, field, None)
            if isinstance(value, (bytes, bytearray)):
                setattr(pdu, field, bytes(value).decode("latin-1"))
    return pdu


# --------------------------------------------------------------------------- the fast path
#
# The PDUs of every payment (deliver_sm, submit_sm, their responses) and of
# link keeping (enquire_link, its response, generic_nack) are encoded and
# decoded here with struct and bytes slicing instead of smpplib's objects,
# which cost some 40-60 us a PDU. The field tables are read off smpplib's own
# classes at import (after the USSD TLVs are registered), so field names,
# order, sizes and limits cannot drift from the reference path.
#
# Equivalence with the smpplib path is the contract (tests/test_smpp_fast_codec.py):
# * encode: the same bytes for every accepted input; any value the fast
#   checks do not take at once goes through `_coerce_field`, which raises the
#   reference path's error or hands back the value it would have used.
# * decode: the same attribute values on an object of a subclass of the
#   smpplib class. Whenever the fast reader meets anything irregular
#   (truncation, a missing NUL, a bad TLV), it hands the PDU to the reference
#   decoder, which raises the error -- same class, same status, same message
#   -- by construction.

_INT, _STR, _OSTR, _FLAG = 0, 1, 2, 3
_KINDS = {int: _INT, str: _STR, _ostr: _OSTR, _flag: _FLAG}
_HEADER = struct.Struct(">LLLL")
_LENGTH = struct.Struct(">L")
_TLV_HEADER = struct.Struct(">HH")
_INT_TLV = {1: struct.Struct(">HHB"), 2: struct.Struct(">HHH"), 4: struct.Struct(">HHL")}
_new = object.__new__


class _Codec:
    """One command's field tables for the fast encoder and decoder."""

    __slots__ = ("command", "command_id", "cls", "fields", "defaults", "sm_length_at", "short_message_at",
                 "tlv_by_tag", "fast_cls", "decode")

    def __init__(self, command: str, decode):
        probe = _smpp.make_pdu(command, client=_NO_SEQUENCE, allow_unknown_opt_params=True)
        cls = type(probe)
        self.command = command
        self.command_id = command_id_of(command)
        self.cls = cls
        self.decode = decode
        order = {name: i for i, name in enumerate(cls.params_order)}
        self.fields: dict[str, tuple] = {}
        self.defaults: list[bytes] = []
        self.sm_length_at = self.short_message_at = None
        for name in cls.params_order:          # mandatory fields, wire order
            if _is_optional(cls, name):
                break
            param = cls.params[name]
            kind = _KINDS[param.type]
            at = len(self.defaults)
            if kind == _INT:
                assert param.size == 1, (command, name)
                self.fields[name] = (_INT, 256, False, at, 0, None)
                self.defaults.append(b"\x00")
            elif kind == _STR:
                assert not hasattr(param, "size"), (command, name)
                self.fields[name] = (_STR, param.max, False, at, 0, None)
                self.defaults.append(b"\x00")
            else:
                assert kind == _OSTR and name == "short_message" and param.len_field == "sm_length", (command, name)
                self.fields[name] = (_OSTR, 254, False, at, 0, None)
                self.defaults.append(b"")
                self.short_message_at = at
                self.sm_length_at = self.fields["sm_length"][3]
        for name, param in cls.params.items():     # TLVs; -1: known to smpplib but never generated
            if name in self.fields:
                continue
            kind = _KINDS[param.type]
            at = order.get(name, -1)
            tag = _consts.OPTIONAL_PARAMS[name]
            if kind == _INT:
                self.fields[name] = (_INT, 1 << (8 * param.size), True, at, tag, _INT_TLV[param.size])
            elif kind == _STR:
                assert not hasattr(param, "size"), (command, name)
                self.fields[name] = (_STR, param.max, True, at, tag, None)
            elif kind == _OSTR:
                self.fields[name] = (_OSTR, 0xFFFF, True, at, tag, None)
            else:
                self.fields[name] = (_FLAG, 0, True, at, tag, None)
        self.tlv_by_tag = {tag: (name, _KINDS[cls.params[name].type])
                           for tag, name in _TLV_NAMES.items() if name in cls.params}
        defaults = {name: getattr(cls, name, None) for name in cls.params}
        defaults.update(command=command, sequence=0, status=0, length=0, unknown_tlvs=(),
                        _client=_NO_SEQUENCE, allow_unknown_opt_params=True, __module__=__name__,
                        __doc__=f"A decoded {command}: smpplib's {cls.__name__} without its per-object setup.")
        # ``sequence`` as a plain class attribute shadows smpplib's property, so
        # the instance's own value is read straight from its __dict__.
        self.fast_cls = type("Fast" + cls.__name__, (cls,), defaults)


def _encode_fast(codec: _Codec, sequence: int, status: int, fields: dict) -> bytes:
    command = codec.command
    if not 0 <= sequence <= 0xFFFFFFFF:
        raise ValueError(f"sequence {sequence} out of range")
    if not 0 <= status <= 0xFFFFFFFF:
        raise ValueError(f"status {status} out of range")
    parts = codec.defaults.copy()
    tlvs = None
    spec_of = codec.fields.get
    short_message = payload = None
    for name, value in fields.items():
        spec = spec_of(name)
        if spec is None:
            raise ValueError(f"{command} has no field {name!r}")
        if value is None:
            continue
        kind, limit, optional, at, tag, tlv = spec
        if kind == _INT:
            if type(value) is not int or not 0 <= value < limit:
                value = _coerce_field(command, name, codec.cls.params[name], value, optional)
            frag = tlv.pack(tag, tlv.size - 4, value) if optional else bytes((value,))
        elif kind == _STR:
            kind_of = type(value)
            if kind_of is str and len(value) < limit and value.isascii() and "\x00" not in value:
                octets = value.encode("ascii")
            elif kind_of is bytes and len(value) < limit and value.isascii() and b"\x00" not in value:
                octets = value
            else:
                octets = _coerce_field(command, name, codec.cls.params[name], value, optional).encode("latin-1")
            if optional:
                frag = _TLV_HEADER.pack(tag, len(octets) + 1) + octets + b"\x00" if octets else None
            else:
                frag = octets + b"\x00"
        elif kind == _OSTR:
            if type(value) is not bytes or len(value) > limit:
                value = _coerce_field(command, name, codec.cls.params[name], value, optional)
            if not optional:            # short_message: placed with sm_length below
                short_message = value
                continue
            if name == "message_payload":
                payload = value
            frag = _TLV_HEADER.pack(tag, len(value)) + value if value else None
        else:
            _coerce_field(command, name, codec.cls.params[name], value, optional)
            raise TypeError(f"{command}.{name} cannot be generated")  # pragma: no cover - raised above
        if not optional:
            parts[at] = frag
        elif frag is not None and at >= 0:
            if tlvs is None:
                tlvs = [(at, frag)]
            else:
                tlvs.append((at, frag))
    if codec.short_message_at is not None:
        if short_message:
            if payload:
                raise ValueError(f"cannot encode {command}: `message_payload` can not be used with `short_message`")
            parts[codec.sm_length_at] = bytes((len(short_message),))
            parts[codec.short_message_at] = short_message
        else:
            parts[codec.sm_length_at] = b"\x00"
    if tlvs is not None:
        tlvs.sort()
        parts.extend(frag for _, frag in tlvs)
    body = b"".join(parts)
    try:
        return _HEADER.pack(16 + len(body), codec.command_id, status, sequence) + body
    except struct.error as exc:
        raise ValueError(f"cannot encode {command}: {exc}") from exc


def _tlvs_fast(raw: bytes, pos: int, table: dict, d: dict) -> bool:
    """Read the TLVs from ``pos`` into ``d``; False on anything irregular."""
    end = len(raw)
    unknown: list[tuple[int, bytes]] = []
    d["unknown_tlvs"] = unknown
    while pos < end:
        if pos + 4 > end:
            return False
        tag, length = _TLV_HEADER.unpack_from(raw, pos)
        pos += 4
        stop = pos + length
        if stop > end:
            return False
        entry = table.get(tag)
        if entry is None:
            unknown.append((tag, raw[pos:stop]))
        else:
            name, kind = entry
            if kind == _INT:
                if length == 1:
                    d[name] = raw[pos]
                elif 0 < length <= 4:
                    d[name] = int.from_bytes(raw[pos:stop], "big")
                else:
                    return False
            elif kind == _STR:
                nul = raw.find(b"\x00", pos, stop)
                d[name] = raw[pos:stop if nul < 0 else nul].decode("latin-1")
            elif kind == _OSTR:
                d[name] = raw[pos:stop]
            else:
                d[name] = True
        pos = stop
    return True


def _decode_sm_fast(codec: _Codec, raw: bytes, length: int, status: int, sequence: int):
    """submit_sm and deliver_sm: one layout of mandatory fields."""
    find = raw.find
    end = len(raw)
    try:
        nul = find(b"\x00", 16)
        if nul < 0:
            return _decode_pdu_smpplib(raw)
        service_type = raw[16:nul].decode("latin-1")
        pos = nul + 1
        source_addr_ton = raw[pos]
        source_addr_npi = raw[pos + 1]
        nul = find(b"\x00", pos + 2)
        if nul < 0:
            return _decode_pdu_smpplib(raw)
        source_addr = raw[pos + 2:nul].decode("latin-1")
        pos = nul + 1
        dest_addr_ton = raw[pos]
        dest_addr_npi = raw[pos + 1]
        nul = find(b"\x00", pos + 2)
        if nul < 0:
            return _decode_pdu_smpplib(raw)
        destination_addr = raw[pos + 2:nul].decode("latin-1")
        pos = nul + 1
        esm_class = raw[pos]
        protocol_id = raw[pos + 1]
        priority_flag = raw[pos + 2]
        nul = find(b"\x00", pos + 3)
        if nul < 0:
            return _decode_pdu_smpplib(raw)
        schedule_delivery_time = raw[pos + 3:nul].decode("latin-1")
        pos = nul + 1
        nul = find(b"\x00", pos)
        if nul < 0:
            return _decode_pdu_smpplib(raw)
        validity_period = raw[pos:nul].decode("latin-1")
        pos = nul + 1
        registered_delivery = raw[pos]
        replace_if_present_flag = raw[pos + 1]
        data_coding = raw[pos + 2]
        sm_default_msg_id = raw[pos + 3]
        sm_length = raw[pos + 4]
    except IndexError:          # the body stops inside the mandatory fields
        return _decode_pdu_smpplib(raw)
    pos += 5
    if sm_length:
        stop = pos + sm_length
        if stop > end:
            return _decode_pdu_smpplib(raw)
        short_message = raw[pos:stop]
        pos = stop
    else:
        short_message = None
    d = {
        "sequence": sequence, "status": status, "length": length,
        "service_type": service_type, "source_addr_ton": source_addr_ton, "source_addr_npi": source_addr_npi,
        "source_addr": source_addr, "dest_addr_ton": dest_addr_ton, "dest_addr_npi": dest_addr_npi,
        "destination_addr": destination_addr, "esm_class": esm_class, "protocol_id": protocol_id,
        "priority_flag": priority_flag, "schedule_delivery_time": schedule_delivery_time,
        "validity_period": validity_period, "registered_delivery": registered_delivery,
        "replace_if_present_flag": replace_if_present_flag, "data_coding": data_coding,
        "sm_default_msg_id": sm_default_msg_id, "sm_length": sm_length, "short_message": short_message,
    }
    if not _tlvs_fast(raw, pos, codec.tlv_by_tag, d):
        return _decode_pdu_smpplib(raw)
    pdu = _new(codec.fast_cls)
    pdu.__dict__ = d
    return pdu


def _decode_resp_fast(codec: _Codec, raw: bytes, length: int, status: int, sequence: int):
    """submit_sm_resp and deliver_sm_resp: a message_id, absent from error responses."""
    d = {"sequence": sequence, "status": status, "length": length}
    pos = 16
    if len(raw) > 16:
        nul = raw.find(b"\x00", 16)
        if nul < 0:
            return _decode_pdu_smpplib(raw)
        d["message_id"] = raw[16:nul].decode("latin-1")
        pos = nul + 1
    if not _tlvs_fast(raw, pos, codec.tlv_by_tag, d):
        return _decode_pdu_smpplib(raw)
    pdu = _new(codec.fast_cls)
    pdu.__dict__ = d
    return pdu


def _decode_empty_fast(codec: _Codec, raw: bytes, length: int, status: int, sequence: int):
    """enquire_link, enquire_link_resp, generic_nack: a header (and, rarely, TLVs)."""
    d = {"sequence": sequence, "status": status, "length": length}
    if len(raw) == 16:
        d["unknown_tlvs"] = []
    elif not _tlvs_fast(raw, 16, codec.tlv_by_tag, d):
        return _decode_pdu_smpplib(raw)
    pdu = _new(codec.fast_cls)
    pdu.__dict__ = d
    return pdu


_FAST_BY_NAME: dict[str, _Codec] = {}
for _name, _decoder in (
    ("submit_sm", _decode_sm_fast), ("deliver_sm", _decode_sm_fast),
    ("submit_sm_resp", _decode_resp_fast), ("deliver_sm_resp", _decode_resp_fast),
    ("enquire_link", _decode_empty_fast), ("enquire_link_resp", _decode_empty_fast),
    ("generic_nack", _decode_empty_fast),
):
    _FAST_BY_NAME[_name] = _Codec(_name, _decoder)
_FAST_BY_ID: dict[int, _Codec] = {c.command_id: c for c in _FAST_BY_NAME.values()}
del _name, _decoder
assert list(_FAST_BY_NAME["submit_sm"].fields)[:18] == list(_FAST_BY_NAME["deliver_sm"].fields)[:18] == [
    "service_type", "source_addr_ton", "source_addr_npi", "source_addr", "dest_addr_ton", "dest_addr_npi",
    "destination_addr", "esm_class", "protocol_id", "priority_flag", "schedule_delivery_time",
    "validity_period", "registered_delivery", "replace_if_present_flag", "data_coding", "sm_default_msg_id",
    "sm_length", "short_message"]


def encode_pdu(command: str, sequence: int, status: int = ESME_ROK, **fields) -> bytes:
    """Encode one PDU.

    ``command`` is an smpplib command name ('bind_transceiver', 'submit_sm',
    'deliver_sm_resp', ...). ``sequence`` goes into the header as given (a
    response echoes its request's). Unknown field names, out-of-range ints and
    over-long strings raise ValueError/TypeError instead of being dropped or
    truncated. The hot commands take the fast path; the bytes are smpplib's.
    """
    codec = _FAST_BY_NAME.get(command)
    if codec is None:
        return _encode_pdu_smpplib(command, sequence, status, **fields)
    return _encode_fast(codec, sequence, status, fields)


def decode_pdu(raw: bytes):
    """Decode one whole PDU (as framed by `PduReader`) into an smpplib object.

    The object has ``command`` (name), ``sequence``, ``status``, the command's
    fields (None when absent), C-strings as ``str``, ``short_message`` /
    ``message_payload`` as ``bytes``, and ``unknown_tlvs`` (a list of
    ``(tag, value)``). Raises `PduError` with the status to answer with.
    The hot commands come back as instances of a subclass of smpplib's class
    with the same attribute values.
    """
    if type(raw) is not bytes:
        raw = bytes(raw)
    if len(raw) >= HEADER_LENGTH:
        length, command_id, status, sequence = _HEADER.unpack_from(raw)
        codec = _FAST_BY_ID.get(command_id)
        if codec is not None and length == len(raw):
            return codec.decode(codec, raw, length, status, sequence)
    return _decode_pdu_smpplib(raw)


class PduReader:
    """Frames a TCP byte stream into whole PDUs on ``command_length``.

    Sans-I/O: feed it whatever arrived, get back zero or more complete PDUs.
    A length below the header size or above `MAX_PDU_LENGTH` cannot be
    resynchronised, so it raises `FramingError` and the connection should be
    dropped.
    """

    def __init__(self, max_length: int = MAX_PDU_LENGTH):
        self._buffer = bytearray()
        self._max_length = max_length

    @property
    def buffered(self) -> int:
        """Octets received but not yet part of a whole PDU."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._buffer or type(data) is not bytes:
            self._buffer += data
            buf = self._buffer
        else:
            # Nothing left over (the usual case: reads end on PDU boundaries):
            # slice the PDUs straight out of ``data``, no copy into the buffer.
            buf = data
        out: list[bytes] = []
        start = 0
        end = len(buf)
        max_length = self._max_length
        while end - start >= 4:
            (length,) = _LENGTH.unpack_from(buf, start)
            if length < HEADER_LENGTH or length > max_length:
                if buf is data:
                    self._buffer = bytearray(data)
                raise FramingError(f"command_length {length} outside {HEADER_LENGTH}..{max_length}")
            if end - start < length:
                break
            out.append(bytes(buf[start:start + length]) if buf is not data else buf[start:start + length])
            start += length
        if buf is data:
            if start < end:
                self._buffer = bytearray(data[start:])
        elif start:
            del buf[:start]
        return out
