"""The menu tree, as data: every USSD page and every IVR menu comes from here.

Node kinds:
- `Menu`: numbered choices (the same keys on a handset screen and on a phone
  keypad); a menu whose `dynamic` is "merchants" gets its choices from the
  configured merchants.
- `Ask`: one input step (an amount, a merchant code, a number, a PIN), with
  the check it must pass and the prompt that asks again.
- `Do`: an operation (the engine runs it through the same Conversation and
  PaymentService as an SMS command, so limits, lockout and idempotency are
  the same on every channel).
- `Transfer`: hand the caller to a person.

Values collected on the way are kept in the menu state under `field`; a PIN
never is: the step that takes it runs the operation at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Choice:
    key: str
    label: str            # prompt name
    target: str           # node id


@dataclass(frozen=True)
class Menu:
    id: str
    title: str            # prompt name
    choices: tuple[Choice, ...] = ()
    dynamic: str | None = None
    channels: tuple[str, ...] = ("ussd", "ivr")


@dataclass(frozen=True)
class Ask:
    id: str
    prompt: str
    kind: str             # amount | merchant_code | msisdn | pin | pin_change
    next: str
    field: str | None = None
    invalid: str = "invalid_input"


@dataclass(frozen=True)
class Do:
    id: str
    op: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Transfer:
    id: str
    prompt: str
    target: str = "agents"


Node = Menu | Ask | Do | Transfer

# the home menus: an account holder, a number without an account, a caller
# whose number is withheld
HOME, NEW, GUEST = "main", "new", "guest"

NODES: tuple[Node, ...] = (
    Menu(HOME, "main_title", (
        Choice("1", "opt_balance", "balance"),
        Choice("2", "opt_statement", "statement"),
        Choice("3", "opt_topup", "topup_amount"),
        Choice("4", "opt_pay", "pay_merchant"),
        Choice("5", "opt_send", "send_to"),
        Choice("6", "opt_airtime", "airtime_amount"),
        Choice("7", "opt_account", "account"),
        Choice("8", "opt_callback", "callback"),
        Choice("9", "opt_agent", "agent"),
    )),
    Menu(NEW, "new_title", (
        Choice("1", "opt_open", "open"),
        Choice("2", "opt_language", "language"),
        Choice("8", "opt_callback", "callback"),
        Choice("9", "opt_agent", "agent"),
    )),
    Menu(GUEST, "guest_title", (
        Choice("1", "opt_open", "open_for"),
        Choice("9", "opt_agent", "agent"),
    )),
    Do("balance", "balance"),
    Do("statement", "statement"),
    Ask("topup_amount", "ask_topup_amount", "amount", "topup", field="amount", invalid="invalid_amount"),
    Do("topup", "request", {"action": "topup"}),
    Menu("pay_merchant", "pay_title", (Choice("9", "opt_other_merchant", "pay_code"),), dynamic="merchants"),
    Ask("pay_code", "ask_merchant_code", "merchant_code", "pay_amount", field="merchant_code",
        invalid="invalid_merchant"),
    Ask("pay_amount", "ask_pay_amount", "amount", "pay", field="amount", invalid="invalid_amount"),
    Do("pay", "request", {"action": "pay"}),
    Ask("send_to", "ask_send_to", "msisdn", "send_amount", field="to", invalid="invalid_number"),
    Ask("send_amount", "ask_send_amount", "amount", "send", field="amount", invalid="invalid_amount"),
    Do("send", "request", {"action": "send"}),
    Ask("airtime_amount", "ask_airtime_amount", "amount", "airtime", field="amount", invalid="invalid_amount"),
    Do("airtime", "request", {"action": "airtime"}),
    Menu("account", "account_title", (
        Choice("1", "opt_change_pin", "change_pin"),
        Choice("2", "opt_freeze", "freeze_confirm"),
        Choice("3", "opt_language", "language"),
    )),
    Ask("change_pin", "ask_change_pin", "pin_change", "change_pin_do", invalid="invalid_pin_change"),
    Do("change_pin_do", "change_pin"),
    Menu("freeze_confirm", "freeze_title", (
        Choice("1", "opt_yes", "freeze"),
        Choice("2", "opt_no", "@back"),
    )),
    Do("freeze", "freeze"),
    Menu("language", "language_title", (
        Choice("1", "opt_zh", "lang_zh"),
        Choice("2", "opt_en", "lang_en"),
    )),
    Do("lang_zh", "language", {"lang": "zh"}),
    Do("lang_en", "language", {"lang": "en"}),
    Do("open", "open"),
    Ask("open_for", "ask_open_number", "msisdn", "open_for_do", field="for", invalid="invalid_number"),
    Do("open_for_do", "open_for"),
    Menu("confirm_open", "agreement_title", (
        Choice("1", "opt_accept", "confirm_open_do"),
        Choice("2", "opt_decline", "cancel_open_do"),
    )),
    Do("confirm_open_do", "confirm_open"),
    Do("cancel_open_do", "cancel_open"),
    Ask("pin", "enter_pin", "pin", "pin_do", invalid="invalid_pin"),
    Do("pin_do", "pin"),
    Do("callback", "callback"),
    Transfer("agent", "transferring"),
)

TREE: dict[str, Node] = {n.id: n for n in NODES}


def prompt_names() -> set[str]:
    """Every prompt the tree names (a test checks config/prompts.toml has them)."""
    names: set[str] = set()
    for n in NODES:
        if isinstance(n, Menu):
            names.add(n.title)
            names.update(c.label for c in n.choices)
        elif isinstance(n, (Ask, Transfer)):
            names.add(n.prompt)
            if isinstance(n, Ask):
                names.add(n.invalid)
    return names


def check_tree(tree: dict[str, Node] = TREE) -> None:
    """Every target exists and every menu's keys are distinct: a broken tree
    fails at import, not on a caller's keypress."""
    for n in tree.values():
        if isinstance(n, Menu):
            keys = [c.key for c in n.choices]
            if len(keys) != len(set(keys)):
                raise ValueError(f"menu {n.id}: duplicate keys {keys}")
            for c in n.choices:
                if not c.target.startswith("@") and c.target not in tree:
                    raise ValueError(f"menu {n.id}: choice {c.key} leads to unknown node {c.target}")
        elif isinstance(n, Ask) and n.next not in tree:
            raise ValueError(f"ask {n.id}: next node {n.next} unknown")


check_tree()
