"""The vocabulary of the SMS command language: which words name which command.

One table, shared by the parser (to recognise a command) and the replies
(to name a command back to the subscriber). Spellings are stored in their
folded form: NFKC-normalised and upper-cased, so `ｋｔ`, `Kt` and `KT` all
look up `KT`. Chinese keywords are their own upper case.

Command names are the one name per idea used across the code: the
conversation layer dispatches on `Command.name`, and the service echoes the
same words back as `Result.params["action"]`.
"""
from __future__ import annotations

OPEN = "open"
CONFIRM = "confirm"
BALANCE = "balance"
STATEMENT = "statement"
TOPUP = "topup"
WITHDRAW = "withdraw"
PAY = "pay"
SEND = "send"
AIRTIME = "airtime"
CHANGE_PIN = "change_pin"
FREEZE = "freeze"
UNFREEZE = "unfreeze"
CLOSE = "close"
HELP = "help"
LANG = "lang"
CANCEL = "cancel"
PIN_REPLY = "pin_reply"
CALLBACK = "callback"

COMMAND_NAMES: frozenset[str] = frozenset({
    OPEN, CONFIRM, BALANCE, STATEMENT, TOPUP, WITHDRAW, PAY, SEND, AIRTIME,
    CHANGE_PIN, FREEZE, UNFREEZE, CLOSE, HELP, LANG, CANCEL, PIN_REPLY, CALLBACK,
})

# Every accepted spelling of a command word -> command name. The first
# spelling per command is the short code replies and help show.
SPELLINGS: dict[str, str] = {
    # open
    "KT": OPEN, "OPEN": OPEN, "开通": OPEN, "开户": OPEN,
    # confirm the pending action
    "A": CONFIRM, "Y": CONFIRM, "YES": CONFIRM, "确认": CONFIRM, "是": CONFIRM,
    "是的": CONFIRM, "确定": CONFIRM,
    # balance
    "YE": BALANCE, "BAL": BALANCE, "BALANCE": BALANCE, "余额": BALANCE,
    "查余额": BALANCE, "余额查询": BALANCE, "查询余额": BALANCE,
    # statement
    "MX": STATEMENT, "STMT": STATEMENT, "STATEMENT": STATEMENT, "明细": STATEMENT,
    "交易明细": STATEMENT,
    # money in and out
    "CZ": TOPUP, "TOPUP": TOPUP, "充值": TOPUP,
    "TX": WITHDRAW, "WITHDRAW": WITHDRAW, "提现": WITHDRAW,
    "ZF": PAY, "PAY": PAY, "支付": PAY, "付款": PAY,
    "ZZ": SEND, "SEND": SEND, "转账": SEND,
    "HF": AIRTIME, "AIRTIME": AIRTIME, "话费": AIRTIME, "充话费": AIRTIME,
    # security and lifecycle
    "MM": CHANGE_PIN, "PIN": CHANGE_PIN, "密码": CHANGE_PIN, "改密码": CHANGE_PIN,
    "修改密码": CHANGE_PIN,
    "DJ": FREEZE, "FREEZE": FREEZE, "冻结": FREEZE,
    "JD": UNFREEZE, "UNFREEZE": UNFREEZE, "解冻": UNFREEZE,
    "XH": CLOSE, "CLOSE": CLOSE, "销户": CLOSE,
    # the platform calls the subscriber back into the voice menu
    "HJ": CALLBACK, "CALLBACK": CALLBACK, "回拨": CALLBACK,
    # conversation
    "BZ": HELP, "HELP": HELP, "?": HELP, "帮助": HELP,
    "LANG": LANG, "LANGUAGE": LANG, "语言": LANG,
    "N": CANCEL, "NO": CANCEL, "取消": CANCEL, "否": CANCEL,
}

# Words that alone switch the language (`中文`, `ENGLISH`), and the values
# accepted after LANG (`LANG EN`, `LANG 中文`).
LANG_WORDS: dict[str, str] = {
    "中文": "zh", "CHINESE": "zh", "汉语": "zh",
    "ENGLISH": "en", "英文": "en", "英语": "en",
}
LANG_VALUES: dict[str, str] = {
    **LANG_WORDS, "ZH": "zh", "CN": "zh", "ZH-CN": "zh", "ZH_CN": "zh",
    "EN": "en", "ENG": "en",
}

# Commands whose arguments may follow the keyword without a space: every
# Chinese keyword (`充值100`, `支付M001 12.5`) and, when the argument starts
# with a digit, the Latin ones too (`CZ100`, `MX2`).
TAKES_ARGUMENTS: frozenset[str] = frozenset({
    STATEMENT, TOPUP, WITHDRAW, PAY, SEND, AIRTIME, CHANGE_PIN, HELP, LANG,
})

# Longest first, so `充话费50` matches `充话费` before anything shorter.
GLUED_PREFIXES: tuple[tuple[str, str], ...] = tuple(sorted(
    ((word, name) for word, name in SPELLINGS.items()
     if name in TAKES_ARGUMENTS and word != "?"),
    key=lambda item: -len(item[0]),
))

# Keywords for which one 6-digit argument is a PIN reply, not a half-typed
# PIN change: subscribers asked for their PIN often answer `PIN 123456`.
PIN_REPLY_SPELLINGS: frozenset[str] = frozenset({"PIN", "密码"})


def lookup(word: str) -> str | None:
    """The command named by one folded word, or None."""
    return SPELLINGS.get(word)
