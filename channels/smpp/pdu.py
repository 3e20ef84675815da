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


def encode_pdu(command: str, sequence: int, status: int = ESME_ROK, **fields) -> bytes:
    """Encode one PDU.

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
        if pos == end:
            if is_response:
                return pos
            fail(ESME_RINVCMDLEN, f"body ends before mandatory field {name}")
        param = cls.params[name]
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


def decode_pdu(raw: bytes):
    """Decode one whole PDU (as framed by `PduReader`) into an smpplib object.

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
        self._buffer += data
        out: list[bytes] = []
        buf = self._buffer
        start = 0
        while len(buf) - start >= 4:
            (length,) = struct.unpack_from(">L", buf, start)
            if length < HEADER_LENGTH or length > self._max_length:
                raise FramingError(f"command_length {length} outside {HEADER_LENGTH}..{self._max_length}")
            if len(buf) - start < length:
                break
            out.append(bytes(buf[start:start + length]))
            start += length
        if start:
            del buf[:start]
        return out
