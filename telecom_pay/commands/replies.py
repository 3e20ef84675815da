"""Subscriber-facing text for every service Result, in zh-CN and English.

The service returns typed `Result`s and never formats text; this module is
the one place that turns them into SMS/USSD replies. Rules it keeps:

- When money moved the reply carries the transaction reference, the amount
  and the new balance (`T8K2P9QX 已支付 12.50 元给 福彩中心, 余额 87.50 元.`).
- Replies are short: one SMS where possible (70 characters in Chinese, 160
  GSM characters in English); statements are split into several messages.
- It never raises. A Result with missing or odd params falls back to a
  fixed text for its outcome, and anything stranger to a generic text, so a
  channel always has something to send.

Language codes: "zh" (default) and "en"; anything starting with "en"
(`en`, `en-GB`) is English, everything else Chinese.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from twisted.logger import Logger

from telecom_pay.money import format_amount
from telecom_pay.msisdn import local_form
from telecom_pay.outcomes import BankDecline, Outcome, Result

from . import keywords as kw
from .parser import ParseError

# Only outcome and action are ever logged: params can hold a PIN or password.
log = Logger(namespace="telecom_pay.commands.replies")

ZH, EN = "zh", "en"
LANGS = (ZH, EN)
# One SMS: 70 UCS2 characters, 160 GSM 7-bit characters. Fixed texts are
# written to fit; texts carrying names and amounts aim to.
SMS_CHARS = {ZH: 70, EN: 160}
STATEMENT_LINES_PER_MESSAGE = 5
# Statement dates are shown in the subscribers' time zone, not UTC: a payment
# at 07:00 Beijing time belongs to that day. China (UTC+8, no DST) is the
# default deployment, as msisdn.DEFAULT_REGION is CN; pass `tz=` to change it.
DEFAULT_TZ: tzinfo = timezone(timedelta(hours=8), "CST")


def normalize_lang(lang: object) -> str:
    """"en", "EN", "en-GB" -> "en"; anything else -> "zh"."""
    if isinstance(lang, str) and lang.strip().lower().startswith("en"):
        return EN
    return ZH


# --- the catalogue -----------------------------------------------------------
# Format strings take named fields; a missing field raises KeyError, which
# sends the renderer to the outcome's fixed fallback text.

USAGE: dict[str, dict[str, str]] = {
    ZH: {
        kw.OPEN: "KT 开通手机支付",
        kw.CONFIRM: "A 确认待办操作",
        kw.CANCEL: "N 取消待办操作",
        kw.BALANCE: "YE 查询余额",
        kw.STATEMENT: "MX [页码] 查询交易明细, 如 MX 2",
        kw.TOPUP: "CZ 金额 从银行卡充值, 如 CZ 100",
        kw.WITHDRAW: "TX 金额 提现到银行卡, 如 TX 50",
        kw.PAY: "ZF 商户代码 金额 [备注], 如 ZF M001 12.50",
        kw.SEND: "ZZ 手机号 金额 转账, 如 ZZ 13800138000 20",
        kw.AIRTIME: "HF 金额 [手机号] 充话费, 如 HF 50",
        kw.CHANGE_PIN: "MM 旧密码 新密码 修改6位支付密码",
        kw.FREEZE: "DJ 冻结账户",
        kw.UNFREEZE: "JD 解冻账户",
        kw.CLOSE: "XH 销户, 余额退回银行卡",
        kw.HELP: "BZ [指令] 查看帮助, 如 BZ ZF",
        kw.LANG: "LANG EN 切换英文, LANG ZH 切换中文",
        kw.PIN_REPLY: "收到支付请求后回复6位支付密码",
        kw.CALLBACK: "HJ 请求回电, 我们给您打电话",
    },
    EN: {
        kw.OPEN: "OPEN (KT): open a mobile wallet",
        kw.CONFIRM: "A: confirm the pending request",
        kw.CANCEL: "N: cancel the pending request",
        kw.BALANCE: "BAL (YE): balance",
        kw.STATEMENT: "STMT (MX) [page]: last transactions, e.g. STMT 2",
        kw.TOPUP: "TOPUP (CZ) <amount>: top up from your card, e.g. TOPUP 100",
        kw.WITHDRAW: "WITHDRAW (TX) <amount>: to your debit card, e.g. WITHDRAW 50",
        kw.PAY: "PAY (ZF) <merchant code> <amount> [ref], e.g. PAY M001 12.50",
        kw.SEND: "SEND (ZZ) <number> <amount>, e.g. SEND 13800138000 20",
        kw.AIRTIME: "AIRTIME (HF) <amount> [number], e.g. AIRTIME 50",
        kw.CHANGE_PIN: "PIN (MM) <old PIN> <new PIN>: change your 6-digit PIN",
        kw.FREEZE: "FREEZE (DJ): freeze your wallet",
        kw.UNFREEZE: "UNFREEZE (JD): unfreeze your wallet",
        kw.CLOSE: "CLOSE (XH): close your wallet, balance back to your card",
        kw.HELP: "HELP (BZ) [command]: help, e.g. HELP PAY",
        kw.LANG: "LANG ZH: Chinese, LANG EN: English",
        kw.PIN_REPLY: "When asked, reply with your 6-digit PIN",
        kw.CALLBACK: "CALLBACK (HJ): we call you back",
    },
}

HELP_TEXT: dict[str, list[str]] = {
    ZH: [
        "手机支付指令: KT 开通, A 确认, N 取消, YE 余额, MX 明细, CZ 金额 充值, TX 金额 提现",
        "ZF 商户代码 金额 支付, ZZ 手机号 金额 转账, HF 金额 充话费, MM 旧密码 新密码 改密码",
        "DJ 冻结, JD 解冻, XH 销户, HJ 回电, LANG EN 英文. 发送 BZ 指令 看用法, 如 BZ ZF",
    ],
    EN: [
        "Commands: OPEN, BAL balance, STMT statement, TOPUP <amount>, WITHDRAW <amount>, "
        "PAY <merchant> <amount> [ref], SEND <number> <amount>, AIRTIME <amount>",
        "PIN <old> <new> change PIN, FREEZE, UNFREEZE, CLOSE, CALLBACK, A confirm, N cancel, "
        "LANG ZH Chinese. HELP <command> for details, e.g. HELP PAY",
    ],
}

_T: dict[str, dict[str, str]] = {
    ZH: {
        # pieces
        "ref": "{ref} ", "fee": ", 手续费 {fee} 元", "bal": ", 余额 {balance} 元",
        "phrase_fee": "(手续费 {fee} 元)",
        # OK, by action
        "ok.open": "手机支付已开通. 发送 BZ 查看指令.",
        "ok.confirm_open": "欢迎使用手机支付! 账户已开通{bal}. 发送 BZ 查看指令.",
        "ok.credentials": "您的支付密码 {pin}{password}. 请立即发送 MM {pin} 新密码 修改支付密码.",
        "ok.password": ", 登录密码 {password}(首次登录后请修改)",
        "ok.balance": "余额 {balance} 元.",
        "ok.balance_w": "余额 {balance} 元, 其中可提现 {withdrawable} 元.",
        "ok.balance_reserved": " 另有 {reserved} 元在审核或处理中, 暂不可用.",
        "ok.topup": "{ref}充值 {amount} 元成功{fee}{bal}.",
        "ok.withdraw": "{ref}提现 {amount} 元已转入银行卡{fee}{bal}.",
        "ok.pay": "{ref}已支付 {amount} 元给 {merchant}{fee}{bal}.",
        "ok.send": "{ref}已向 {counterparty} 转账 {amount} 元{fee}{bal}.",
        "ok.receive": "{ref}收到 {counterparty} 转账 {amount} 元{bal}.",
        "ok.airtime": "{ref}已为 {counterparty} 充话费 {amount} 元{fee}{bal}.",
        "ok.airtime_own": "{ref}已充话费 {amount} 元{fee}{bal}.",
        "ok.cash_in": "{ref}现金存入 {amount} 元{fee}{bal}.",
        "ok.refund": "{ref}{merchant}退款 {amount} 元已到账{bal}.",
        "ok.refund_anon": "{ref}退款 {amount} 元已到账{bal}.",
        "ok.change_pin": "支付密码已修改.",
        "ok.freeze": "账户已冻结. 发送 JD 解冻.",
        "ok.unfreeze": "账户已解冻.",
        "ok.callback": "收到, 我们将尽快给您回电, 请注意接听.",
        "ok.callback_open": "您的回电请求正在处理, 请注意接听来电.",
        "ok.callback_failed": "抱歉, 多次回电未能接通. 发送 HJ 可再次请求回电.",
        "ok.close": "{ref}账户已销户, 余额 {amount} 元已退回银行卡.",
        "ok.close_empty": "账户已销户. 感谢使用.",
        "ok.lang": "已切换为中文.",
        "ok.cancel": "已取消.",
        "ok.confirm": "已确认.",
        "ok.pin_reset": "您的支付密码已重置为 {pin}. 请立即发送 MM {pin} 新密码 修改.",
        "ok.bind_card": "尾号 {last4} 的{card}已绑定.",
        "ok.unbind_card": "银行卡已解绑.",
        "ok.kyc_tier": "账户等级已调整为 {tier} 级, 交易限额随之调整.",
        "ok.number_change": "您的手机支付账户已转到号码 {number}.",
        "ok.sms_sent.agreement": "开户协议短信已发送至 {number}; 用户回复 A 后开通, 初始密码由短信发给用户.",
        "ok.sms_sent.pin": "新支付密码已短信发送至 {number}; 用户须先发送 MM 修改.",
        "ok.ownership_transfer": "{number} 已过户; 原账户余额 {held} 元暂存待退; 新机主的初始密码已短信发送.",
        "ok.cancel_number": "号码已注销, 手机支付账户已冻结{held}.",
        "ok.cancel_number_held": ", 余额 {balance} 元将退还给您",
        "ok.agent_float": "{ref}备付金增加 {amount} 元{bal}.",
        "card.debit": "借记卡", "card.credit": "信用卡", "card.any": "银行卡",
        # statement
        "stmt.header": "交易明细 {page}/{pages}:",
        "stmt.header_1": "交易明细:",
        "stmt.more": "回复 MX {next} 看下一页",
        "stmt.empty": "暂无交易记录.",
        "stmt.no_more": "没有更多记录. 发送 MX 查看最近交易.",
        "stmt.pending": "(处理中)",
        "stmt.voided": "(已撤销)",
        "stmt.card": "银行卡",
        # pending states
        "confirm.open": "您正在开通手机支付, 请{within}回复 A 确认, 回复 N 取消.",
        "confirm.any": "确认{phrase}? 请{within}回复 A 确认, 回复 N 取消.",
        "within": "在 {ttl} 分钟内",
        "pin.any": "{phrase}, 请{within}回复6位支付密码确认, 回复 N 取消.",
        # SP payment requests (telecom_pay/merchants/payments.py): named by their tag
        "sp.ask": "请回复\"{tag} 支付密码\"确认向{merchant}支付{amount}元(订单{order}); 回复\"N {tag}\"取消.",
        "sp.choose": "您有多笔待确认的支付: {tags}. 请回复\"编号 支付密码\"确认其中一笔, 如\"{first} 支付密码\".",
        "sp.declined.subscriber_declined": "已取消向{merchant}支付{amount}元(订单{order}).",
        "sp.declined.wrong_pin": "支付密码错误次数过多, 向{merchant}支付{amount}元(订单{order})已取消.",
        "sp.declined.any": "向{merchant}支付{amount}元(订单{order})未能完成, 已取消.",
        "progress.any": "{ref}{phrase}处理中, 结果将短信通知.",
        "progress.close": "{ref}销户处理中, 余额 {amount} 元正退回银行卡, 结果将短信通知.",
        # action phrases (used by pending states and bank declines)
        "phrase.topup": "充值 {amount} 元",
        "phrase.withdraw": "提现 {amount} 元",
        "phrase.pay": "向 {merchant} 支付 {amount} 元",
        "phrase.send": "向 {counterparty} 转账 {amount} 元",
        "phrase.airtime": "为 {counterparty} 充话费 {amount} 元",
        "phrase.airtime_own": "充话费 {amount} 元",
        "phrase.cash_in": "现金存入 {amount} 元",
        "phrase.refund": "退款 {amount} 元",
        "phrase.close": "销户并退回 {amount} 元到银行卡",
        "bare.topup": "充值", "bare.withdraw": "提现", "bare.pay": "支付",
        "bare.send": "转账", "bare.airtime": "充话费", "bare.cash_in": "现金存入",
        "bare.refund": "退款", "bare.receive": "收款", "bare.open": "开通手机支付",
        "bare.confirm_open": "开通手机支付", "bare.close": "销户 (余额退回银行卡)",
        "bare.change_pin": "修改支付密码", "bare.freeze": "冻结账户",
        "bare.unfreeze": "解冻账户", "bare.balance": "查询余额",
        "bare.statement": "查询明细", "bare.lang": "切换语言", "bare.cancel": "取消",
        "bare.confirm": "确认", "bare.any": "该操作", "bare.bind_card": "绑定银行卡",
        "bare.unbind_card": "解绑银行卡",
        "merchant": "商户", "counterparty": "对方",
        # failures
        "bank_declined": "{ref}{phrase}失败: {reason}.",
        "bank_declined_any": "{ref}银行拒绝交易: {reason}.",
        "bank_unavailable": "{ref}{phrase}未完成: 银行系统暂时无法处理, 请稍后再试.",
        "decline.insufficient_funds": "银行卡余额不足",
        "decline.invalid_card": "银行卡无效",
        "decline.expired_card": "银行卡已过期",
        "decline.restricted": "银行卡交易受限",
        "decline.issuer_unavailable": "发卡行暂时无法处理, 请稍后再试",
        "decline.other": "请联系发卡行",
        "insufficient_funds": "余额不足, 当前余额 {balance} 元.",
        "not_withdrawable": "信用卡充值的资金只能消费, 不能提现或转账, 可提现 {withdrawable} 元.",
        "no_debit_card": "提现只能到借记卡, 您绑定的是信用卡. 请到营业厅或致电客服绑定借记卡.",
        "limit_per_txn": "超过单笔限额 {limit} 元.",
        "limit_daily": "超过每日限额 {limit} 元.",
        "limit_monthly": "超过每月限额 {limit} 元.",
        "velocity_hold": "操作过于频繁, 请{wait}后再试.",
        "risk.held": "{ref}{phrase}需人工审核, 款项已预留 (不能再用), 审核结果将短信通知{bal}.",
        "risk.refused": "{ref}{phrase}经审核未通过, 款项已退回账户{bal}.",
        "wait.seconds": "{n} 秒", "wait.minutes": "{n} 分钟",
        "pin_wrong": "支付密码错误, 还可尝试 {attempts_left} 次.",
        "pin_wrong_last": "支付密码错误, 再错将锁定支付.",
        "pin_locked": "支付密码错误次数过多, 已锁定 {locked_minutes} 分钟. 可联系客服解锁.",
        "unknown_merchant": "商户代码 {merchant_code} 不存在, 请核对.",
        "merchant_inactive": "商户 {merchant} 暂停收款.",
        "unknown_recipient": "{counterparty} 未开通手机支付, 无法转账.",
        "balance_not_zero": "账户尚有余额 {balance} 元, 请先提现 (TX 金额) 再销户.",
        "balance_in_flight": "有交易正在处理中, 请稍后再销户.",
        "pin_weak": "新密码太简单 (如 123456, 111111), 请换一个6位数字.",
        "invalid_refund": "金额无效, 最多可退 {refundable} 元.",
        "exists_frozen": "您已开通手机支付, 账户已冻结, 发送 JD 解冻.",
        "exists_pending": "您的开户申请待确认, 请回复 A 确认.",
        "idempotency_conflict": "该请求编号已用于另一笔交易 (不同: {differs}).",
        "malformed": "指令格式有误. 格式: {usage}",
        "parse.empty": "请发送指令, 如 YE 查询余额. 发送 BZ 查看帮助.",
        "parse.unknown": "未识别的指令. 发送 BZ 查看帮助.",
        "parse.malformed": "{reason}. 格式: {usage}",
        "detail.amount": "金额有误",
        "detail.amount_missing": "缺少金额",
        "detail.msisdn": "手机号码有误",
        "detail.msisdn_missing": "缺少手机号码",
        "detail.merchant_code": "商户代码有误",
        "detail.merchant_code_missing": "缺少商户代码",
        "detail.pin": "支付密码须为6位数字",
        "detail.pin_missing": "缺少支付密码",
        "detail.page": "页码有误",
        "detail.reference": "备注最多32个字符",
        "detail.lang": "语言有误",
        "detail.lang_missing": "缺少语言",
        "detail.too_many_args": "参数过多",
        "detail.other": "指令格式有误",
        "generic.ok": "操作成功.",
        "generic.fail": "操作未成功, 请稍后再试或发送 BZ 查看帮助.",
    },
    EN: {
        "ref": "{ref} ", "fee": " Fee {fee}.", "bal": " Balance {balance}.",
        "phrase_fee": " (fee {fee})",
        "ok.open": "Your mobile wallet is open. Send HELP for commands.",
        "ok.confirm_open": "Welcome to mobile pay! Your wallet is open.{bal} Send HELP for commands.",
        "ok.credentials": "Your payment PIN is {pin}{password}. Change your PIN now: send MM {pin} <new PIN>.",
        "ok.password": ", login password {password} (change it at first login)",
        "ok.balance": "Balance {balance}.",
        "ok.balance_w": "Balance {balance}, of which {withdrawable} can be withdrawn.",
        "ok.balance_reserved": " A further {reserved} is reserved for payments under review or in progress.",
        "ok.topup": "{ref}Topped up {amount}.{fee}{bal}",
        "ok.withdraw": "{ref}Withdrew {amount} to your card.{fee}{bal}",
        "ok.pay": "{ref}Paid {amount} to {merchant}.{fee}{bal}",
        "ok.send": "{ref}Sent {amount} to {counterparty}.{fee}{bal}",
        "ok.receive": "{ref}Received {amount} from {counterparty}.{bal}",
        "ok.airtime": "{ref}Airtime {amount} for {counterparty}.{fee}{bal}",
        "ok.airtime_own": "{ref}Airtime {amount} added.{fee}{bal}",
        "ok.cash_in": "{ref}Cash deposit {amount}.{fee}{bal}",
        "ok.refund": "{ref}Refund {amount} from {merchant}.{bal}",
        "ok.refund_anon": "{ref}Refund {amount} received.{bal}",
        "ok.change_pin": "Your PIN has been changed.",
        "ok.freeze": "Your wallet is frozen. Send UNFREEZE to unfreeze it.",
        "ok.unfreeze": "Your wallet is active again.",
        "ok.callback": "We will call you back shortly. Please answer the call.",
        "ok.callback_open": "Your call-back is already on its way. Please answer the call.",
        "ok.callback_failed": "Sorry, we could not reach you by phone. Send CALLBACK to be called again.",
        "ok.close": "{ref}Wallet closed; {amount} returned to your card.",
        "ok.close_empty": "Wallet closed. Thank you.",
        "ok.lang": "Language set to English.",
        "ok.cancel": "Cancelled.",
        "ok.confirm": "Confirmed.",
        "ok.pin_reset": "Your PIN was reset to {pin}. Change it now: send MM {pin} <new PIN>.",
        "ok.bind_card": "Your {card} ending {last4} is now linked.",
        "ok.unbind_card": "Your card is unlinked.",
        "ok.kyc_tier": "Your account tier is now {tier}; your limits changed accordingly.",
        "ok.number_change": "Your mobile wallet has moved to number {number}.",
        "ok.sms_sent.agreement": "Agreement SMS sent to {number}; the account opens when they reply A, "
                                 "and the initial PIN and password go to them by SMS.",
        "ok.sms_sent.pin": "A new PIN was sent by SMS to {number}; they must change it (MM) before paying.",
        "ok.ownership_transfer": "{number} transferred; the old balance {held} is held for refund; the new "
                                 "holder's initial PIN and password were sent by SMS.",
        "ok.cancel_number": "Your number was cancelled and your wallet frozen{held}.",
        "ok.cancel_number_held": "; the balance {balance} will be refunded to you",
        "ok.agent_float": "{ref}Float credited {amount}.{bal}",
        "card.debit": "debit card", "card.credit": "credit card", "card.any": "card",
        "stmt.header": "Statement {page}/{pages}:",
        "stmt.header_1": "Statement:",
        "stmt.more": "Send STMT {next} for more",
        "stmt.empty": "No transactions yet.",
        "stmt.no_more": "No more transactions. Send STMT for the latest.",
        "stmt.pending": " (pending)",
        "stmt.voided": " (void)",
        "stmt.card": "card",
        "confirm.open": "Reply A {within}to open your mobile wallet, N to cancel.",
        "confirm.any": "Reply A {within}to {phrase}, N to cancel.",
        "within": "within {ttl} min ",
        "pin.any": "To {phrase}, reply {within}with your 6-digit PIN (N to cancel).",
        "sp.ask": "Reply \"{tag} <PIN>\" to pay {amount} to {merchant} for order {order}; \"N {tag}\" to decline.",
        "sp.choose": "Several payments wait for you: {tags}. Reply \"<number> <PIN>\" to confirm one, "
                     "e.g. \"{first} <PIN>\".",
        "sp.declined.subscriber_declined": "Declined: {amount} to {merchant} for order {order}.",
        "sp.declined.wrong_pin": "Too many wrong PINs: the payment of {amount} to {merchant} for order {order} "
                                 "is declined.",
        "sp.declined.any": "The payment of {amount} to {merchant} for order {order} could not be made "
                           "and is declined.",
        "progress.any": "{ref}Request to {phrase} is in progress. We will text you the result.",
        "progress.close": "{ref}Closing your wallet: {amount} is on its way to your card. "
                          "We will text you the result.",
        "phrase.topup": "top up {amount}",
        "phrase.withdraw": "withdraw {amount}",
        "phrase.pay": "pay {amount} to {merchant}",
        "phrase.send": "send {amount} to {counterparty}",
        "phrase.airtime": "buy airtime {amount} for {counterparty}",
        "phrase.airtime_own": "buy airtime {amount}",
        "phrase.cash_in": "deposit {amount}",
        "phrase.refund": "refund {amount}",
        "phrase.close": "close your wallet and return {amount} to your card",
        "bare.topup": "top up", "bare.withdraw": "withdraw", "bare.pay": "pay",
        "bare.send": "send money", "bare.airtime": "buy airtime", "bare.cash_in": "deposit cash",
        "bare.refund": "refund", "bare.receive": "receive money", "bare.open": "open a wallet",
        "bare.confirm_open": "open a wallet", "bare.close": "close your wallet (balance back to your card)",
        "bare.change_pin": "change your PIN", "bare.freeze": "freeze your wallet",
        "bare.unfreeze": "unfreeze your wallet", "bare.balance": "check your balance",
        "bare.statement": "get a statement", "bare.lang": "change language", "bare.cancel": "cancel",
        "bare.confirm": "confirm", "bare.any": "go ahead", "bare.bind_card": "link your card",
        "bare.unbind_card": "unlink your card",
        "merchant": "the merchant", "counterparty": "the recipient",
        "bank_declined": "{ref}Could not {phrase}: {reason}.",
        "bank_declined_any": "{ref}Declined by the bank: {reason}.",
        "bank_unavailable": "{ref}Could not {phrase}: the bank is not answering. Please try again later.",
        "decline.insufficient_funds": "insufficient funds on the card",
        "decline.invalid_card": "invalid card",
        "decline.expired_card": "card expired",
        "decline.restricted": "card restricted",
        "decline.issuer_unavailable": "card issuer unavailable, try later",
        "decline.other": "please contact your bank",
        "insufficient_funds": "Insufficient balance ({balance}).",
        "no_debit_card": "Withdrawals go to a debit card only; yours is a credit card. Visit a shop or call us.",
        "not_withdrawable": "Funds topped up by credit card can be spent but not withdrawn "
                            "or sent. Withdrawable: {withdrawable}.",
        "limit_per_txn": "Over the per-transaction limit of {limit}.",
        "limit_daily": "Over your daily limit of {limit}.",
        "limit_monthly": "Over your monthly limit of {limit}.",
        "velocity_hold": "Too many requests. Try again in {wait}.",
        "risk.held": "{ref}Your request to {phrase} is under review; the money is reserved until then and we "
                     "will text you the result{bal}.",
        "risk.refused": "{ref}Your request to {phrase} was refused after review; the money is back in your "
                        "wallet{bal}.",
        "wait.seconds": "{n} s", "wait.minutes": "{n} min",
        "pin_wrong": "Wrong PIN. {attempts_left} attempts left.",
        "pin_wrong_last": "Wrong PIN. One more wrong PIN locks payments.",
        "pin_locked": "Too many wrong PINs: payments locked for {locked_minutes} min. "
                      "Customer service can unlock.",
        "unknown_merchant": "Unknown merchant code {merchant_code}. Please check it.",
        "merchant_inactive": "{merchant} is not taking payments now.",
        "unknown_recipient": "{counterparty} has no mobile wallet.",
        "balance_not_zero": "Your balance {balance} must be withdrawn first (WITHDRAW <amount>).",
        "balance_in_flight": "A transaction is still in progress. Try closing again later.",
        "pin_weak": "That PIN is too easy to guess (like 123456 or 111111). Choose another 6 digits.",
        "invalid_refund": "Invalid amount; at most {refundable} can be refunded.",
        "exists_frozen": "You already have a wallet and it is frozen. Send UNFREEZE to unfreeze it.",
        "exists_pending": "Your wallet is awaiting confirmation: reply A.",
        "idempotency_conflict": "This request id was already used for another transaction "
                                "(differs: {differs}).",
        "malformed": "Wrong format. Use: {usage}",
        "parse.empty": "Empty message. Send HELP for the list of commands.",
        "parse.unknown": "Unknown command. Send HELP for the list of commands.",
        "parse.malformed": "{reason}. Use: {usage}",
        "detail.amount": "Invalid amount",
        "detail.amount_missing": "Amount missing",
        "detail.msisdn": "Invalid phone number",
        "detail.msisdn_missing": "Phone number missing",
        "detail.merchant_code": "Invalid merchant code",
        "detail.merchant_code_missing": "Merchant code missing",
        "detail.pin": "A PIN is 6 digits",
        "detail.pin_missing": "PIN missing",
        "detail.page": "Invalid page number",
        "detail.reference": "Reference too long (32 max)",
        "detail.lang": "Unknown language",
        "detail.lang_missing": "Language missing",
        "detail.too_many_args": "Too many words",
        "detail.other": "Wrong format",
        "generic.ok": "Done.",
        "generic.fail": "Request failed. Please try again later or send HELP.",
    },
}

# Fixed text per outcome: what is sent when the rich template cannot be
# filled (params missing). Needs no params at all.
FALLBACK: dict[str, dict[Outcome, str]] = {
    ZH: {
        Outcome.OK: "操作成功.",
        Outcome.CONFIRM_REQUIRED: "请回复 A 确认, 回复 N 取消.",
        Outcome.PIN_REQUIRED: "请回复6位支付密码确认, 回复 N 取消.",
        Outcome.IN_PROGRESS: "处理中, 结果将短信通知.",
        Outcome.NO_ACCOUNT: "您尚未开通手机支付, 发送 KT 开通.",
        Outcome.ACCOUNT_EXISTS: "您已开通手机支付. 发送 BZ 查看指令.",
        Outcome.ACCOUNT_PENDING: "账户待确认, 请回复 A 确认开通.",
        Outcome.ACCOUNT_FROZEN: "账户已冻结, 暂不能交易. 发送 JD 解冻.",
        Outcome.ACCOUNT_CLOSED: "账户已销户. 发送 KT 重新开通.",
        Outcome.ALREADY_ACTIVE: "账户状态正常, 无需解冻.",
        Outcome.BALANCE_NOT_ZERO: "账户尚有余额, 请先提现再销户.",
        Outcome.INSUFFICIENT_FUNDS: "余额不足.",
        Outcome.NOT_WITHDRAWABLE: "信用卡充值的资金只能消费, 不能提现或转账.",
        Outcome.INVALID_AMOUNT: "金额无效, 如 12.50.",
        Outcome.LIMIT_PER_TXN: "超过单笔交易限额.",
        Outcome.LIMIT_DAILY: "超过每日交易限额.",
        Outcome.LIMIT_MONTHLY: "超过每月交易限额.",
        Outcome.VELOCITY_HOLD: "操作过于频繁, 请稍后再试.",
        Outcome.RISK_HELD: "该交易需人工审核, 审核结果将短信通知.",
        Outcome.RISK_REFUSED: "该交易经审核未通过, 款项已退回.",
        Outcome.PIN_WRONG: "支付密码错误.",
        Outcome.PIN_LOCKED: "支付密码错误次数过多, 支付已锁定. 可联系客服解锁.",
        Outcome.PIN_FORMAT: "支付密码须为6位数字.",
        Outcome.FREEZE_LIMIT: "今日自助冻结次数已达上限. 如手机丢失, 请致电客服冻结账户.",
        Outcome.CALLBACK_LIMIT: "今日回电请求次数已达上限, 请明天再试或致电客服.",
        Outcome.PIN_CHANGE_REQUIRED: "请先修改初始支付密码: 发送 MM 旧密码 新密码. 修改前只能查询余额、明细和冻结账户.",
        Outcome.UNKNOWN_MERCHANT: "商户代码不存在, 请核对.",
        Outcome.MERCHANT_INACTIVE: "该商户暂停收款.",
        Outcome.UNKNOWN_RECIPIENT: "对方未开通手机支付, 无法转账.",
        Outcome.SELF_TRANSFER: "不能给自己转账.",
        Outcome.INVALID_NUMBER: "手机号码无效.",
        Outcome.NO_CARD: "未绑定银行卡, 请到营业厅或致电客服绑定.",
        Outcome.BANK_DECLINED: "银行拒绝交易, 请联系发卡行.",
        Outcome.BANK_UNAVAILABLE: "银行系统暂时无法处理, 请稍后再试.",
        Outcome.NOTHING_PENDING: "没有待确认的操作.",
        Outcome.CONFIRMATION_EXPIRED: "确认已超时, 请重新发送指令.",
        Outcome.UNKNOWN_COMMAND: "未识别的指令. 发送 BZ 查看帮助.",
        Outcome.MALFORMED: "指令格式有误. 发送 BZ 查看帮助.",
        Outcome.IDEMPOTENCY_CONFLICT: "该请求编号已用于另一笔交易.",
        Outcome.NOT_AUTHORIZED: "无权执行此操作.",
        Outcome.NOT_FOUND: "未找到相关记录.",
    },
    EN: {
        Outcome.OK: "Done.",
        Outcome.CONFIRM_REQUIRED: "Reply A to confirm, N to cancel.",
        Outcome.PIN_REQUIRED: "Reply with your 6-digit PIN to confirm, N to cancel.",
        Outcome.IN_PROGRESS: "In progress. We will text you the result.",
        Outcome.NO_ACCOUNT: "You have no mobile wallet. Send OPEN to open one.",
        Outcome.ACCOUNT_EXISTS: "You already have a mobile wallet. Send HELP for commands.",
        Outcome.ACCOUNT_PENDING: "Your wallet is awaiting confirmation: reply A.",
        Outcome.ACCOUNT_FROZEN: "Your wallet is frozen. Send UNFREEZE to unfreeze it.",
        Outcome.ACCOUNT_CLOSED: "Your wallet is closed. Send OPEN to open a new one.",
        Outcome.ALREADY_ACTIVE: "Your wallet is already active.",
        Outcome.BALANCE_NOT_ZERO: "Please withdraw your balance before closing.",
        Outcome.INSUFFICIENT_FUNDS: "Insufficient balance.",
        Outcome.NOT_WITHDRAWABLE: "Funds topped up by credit card can be spent but not withdrawn or sent.",
        Outcome.INVALID_AMOUNT: "Invalid amount. Example: 12.50",
        Outcome.LIMIT_PER_TXN: "Over the per-transaction limit.",
        Outcome.LIMIT_DAILY: "Over your daily limit.",
        Outcome.LIMIT_MONTHLY: "Over your monthly limit.",
        Outcome.VELOCITY_HOLD: "Too many requests. Please try again later.",
        Outcome.RISK_HELD: "This payment is under review. We will text you the result.",
        Outcome.RISK_REFUSED: "This payment was refused after review; the money is back in your wallet.",
        Outcome.PIN_WRONG: "Wrong PIN.",
        Outcome.PIN_LOCKED: "Too many wrong PINs: payments locked. Customer service can unlock.",
        Outcome.PIN_FORMAT: "A PIN is 6 digits.",
        Outcome.FREEZE_LIMIT: "Too many freezes from this number today. If your phone is lost, call customer "
                              "service to freeze your wallet.",
        Outcome.CALLBACK_LIMIT: "Too many call-back requests from this number today. Please try again tomorrow "
                                "or call customer service.",
        Outcome.PIN_CHANGE_REQUIRED: "Change your PIN first: send MM <old PIN> <new PIN>. "
                                     "Until then you can only check your balance and statement, or freeze.",
        Outcome.UNKNOWN_MERCHANT: "Unknown merchant code. Please check it.",
        Outcome.MERCHANT_INACTIVE: "This merchant is not taking payments now.",
        Outcome.UNKNOWN_RECIPIENT: "The recipient has no mobile wallet.",
        Outcome.SELF_TRANSFER: "You cannot send money to yourself.",
        Outcome.INVALID_NUMBER: "Invalid phone number.",
        Outcome.NO_CARD: "No bank card is linked to your wallet. Visit a shop or call us.",
        Outcome.BANK_DECLINED: "Declined by the bank. Please contact your bank.",
        Outcome.BANK_UNAVAILABLE: "The bank is not answering. Please try again later.",
        Outcome.NOTHING_PENDING: "Nothing is waiting for confirmation.",
        Outcome.CONFIRMATION_EXPIRED: "That request expired. Please send the command again.",
        Outcome.UNKNOWN_COMMAND: "Unknown command. Send HELP for the list of commands.",
        Outcome.MALFORMED: "Wrong format. Send HELP for the list of commands.",
        Outcome.IDEMPOTENCY_CONFLICT: "This request id was already used for another transaction.",
        Outcome.NOT_AUTHORIZED: "Not allowed.",
        Outcome.NOT_FOUND: "Not found.",
    },
}

_MONEY_ACTIONS = frozenset({"topup", "withdraw", "pay", "send", "receive", "airtime",
                            "cash_in", "refund", "agent_float"})


# --- public API --------------------------------------------------------------

def render(result: Result, lang: str, *, tz: tzinfo | None = None) -> list[str]:
    """The reply messages (usually one) for a service Result. Never raises.
    `tz` is the time zone statement dates are shown in (DEFAULT_TZ)."""
    lg = normalize_lang(lang)
    try:
        messages = _render(result, lg, tz or DEFAULT_TZ)
        if messages and all(isinstance(m, str) and m.strip() for m in messages):
            return messages
    except Exception:  # noqa: BLE001 - a reply must always be produced
        log.failure("reply for {outcome} failed; sending the fallback text",
                    outcome=getattr(result, "outcome", None))
    return [_fallback(result, lg)]


def render_parse_error(err: ParseError, lang: str) -> list[str]:
    """Reply to text the parser refused: usage help for a malformed command,
    a pointer to BZ/HELP otherwise. Never raises."""
    lg = normalize_lang(lang)
    t = _T[lg]
    try:
        if err.kind == "malformed" and err.command in USAGE[lg]:
            return [t["parse.malformed"].format(reason=_detail_reason(err, t),
                                               usage=USAGE[lg][err.command])]
        if err.kind == "empty":
            return [t["parse.empty"]]
    except Exception:  # noqa: BLE001
        pass
    return [t["parse.unknown"]]


def render_help(lang: str, topic: str | None = None) -> list[str]:
    """The command list (two messages), or one command's usage for `BZ ZF`."""
    lg = normalize_lang(lang)
    if topic is not None and topic in USAGE[lg]:
        return [USAGE[lg][topic]]
    return list(HELP_TEXT[lg])


def usage(command_name: str, lang: str) -> str:
    """One line saying how to type a command (`ZF 商户代码 金额 [备注], ...`)."""
    lg = normalize_lang(lang)
    return USAGE[lg].get(command_name, _T[lg]["parse.unknown"])


# --- rendering ---------------------------------------------------------------

def _fallback(result: object, lg: str) -> str:
    outcome = getattr(result, "outcome", None)
    text = FALLBACK[lg].get(outcome) if isinstance(outcome, Outcome) else None
    if text:
        return text
    ok = isinstance(outcome, Outcome) and outcome.ok
    return _T[lg]["generic.ok" if ok else "generic.fail"]


def _render(result: Result, lg: str, tz: tzinfo) -> list[str]:
    outcome = result.outcome
    params = result.params if isinstance(result.params, Mapping) else {}
    ctx = _Context(result, params, lg, tz)
    handler = _HANDLERS.get(outcome)
    if handler is not None:
        try:
            out = handler(ctx)
            if out:
                return out
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # Params missing or of the wrong type: the fixed text still helps.
            log.debug("reply for {outcome}/{action} fell back: {exc!r}",
                      outcome=outcome, action=ctx.action, exc=exc)
    return [_fallback(result, lg)]


class _Context:
    """One Result being rendered in one language, with its fields formatted.
    Properties raise KeyError when a value the template needs is absent."""

    def __init__(self, result: Result, params: Mapping[str, Any], lg: str, tz: tzinfo) -> None:
        self.result = result
        self.params = params
        self.lg = lg
        self.tz = tz
        self.t = _T[lg]
        action = params.get("action")
        self.action = action if isinstance(action, str) else None

    def text(self, key: str, **fields: Any) -> str:
        return self.t[key].format(**fields)

    @staticmethod
    def money(value: Any) -> str:
        if value is None:
            raise KeyError("amount")
        return format_amount(value)

    def fields(self) -> dict[str, Any]:
        """Optional pieces (`ref `, `, 手续费 ...`, `, 余额 ...`) as text, empty
        when absent, plus the names of the other party."""
        r, p = self.result, self.params
        out: dict[str, Any] = {
            "ref": self.text("ref", ref=r.ref) if r.ref else "",
            "fee": self.text("fee", fee=format_amount(r.fee)) if r.fee else "",
            "bal": self.text("bal", balance=format_amount(r.balance)) if r.balance is not None else "",
            "merchant": _clean(p.get("merchant_name")) or _clean(p.get("merchant_code"))
            or self.t["merchant"],
            "counterparty": _clean(p.get("counterparty")) or self.t["counterparty"],
        }
        if r.amount is not None:
            out["amount"] = format_amount(r.amount)
        return out

    def phrase(self) -> str:
        """What the operation is, without its outcome (`向 福彩中心 支付 12.50 元`)."""
        action = self.action or "any"
        f = self.fields()
        key = f"phrase.{action}"
        if action == "airtime" and not _clean(self.params.get("counterparty")):
            key = "phrase.airtime_own"
        try:
            text = self.t[key].format(**f)
        except KeyError:
            text = self.t.get(f"bare.{action}", self.t["bare.any"])
        if self.result.fee:
            text += self.text("phrase_fee", fee=format_amount(self.result.fee))
        return text

    def within(self) -> str:
        ttl = self.params.get("ttl_minutes")
        if _is_count(ttl) and ttl > 0:
            return self.text("within", ttl=ttl)
        return ""


def _clean(value: Any) -> str:
    """A display value from params, one line, or "" when unusable."""
    if value is None or isinstance(value, bool):
        return ""
    text = " ".join(str(value).split())
    return text[:40]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- per-outcome handlers -----------------------------------------------------

def _ok(c: _Context) -> list[str]:
    action = c.action
    r, p = c.result, c.params
    if action == "confirm_open":
        return _welcome(c)
    if action == "balance":
        if r.balance is None:
            raise KeyError("balance")
        w = p.get("withdrawable")
        if _is_count(w) and w != r.balance:
            text = c.text("ok.balance_w", balance=format_amount(r.balance), withdrawable=format_amount(w))
        else:
            text = c.text("ok.balance", balance=format_amount(r.balance))
        reserved = p.get("reserved")
        if _is_count(reserved) and reserved > 0:      # held by a risk rule, or waiting on the bank
            text += c.text("ok.balance_reserved", reserved=format_amount(reserved))
        return [text]
    if action == "statement":
        return _statement(c)
    if action == "lang":
        lg = normalize_lang(p.get("lang", c.lg))
        return [_T[lg]["ok.lang"]]
    if action == "callback":
        return [c.t["ok.callback_open" if p.get("already") else "ok.callback"]]
    if action == "sp_declined":
        reason = p.get("reason")
        key = f"sp.declined.{reason}" if f"sp.declined.{reason}" in c.t else "sp.declined.any"
        return [_sp_text(c, key)]
    if action == "close":
        if r.amount:
            return [c.text("ok.close", **c.fields())]
        return [c.t["ok.close_empty"]]
    if action in _MONEY_ACTIONS:
        key = f"ok.{action}"
        if action == "airtime" and not _clean(p.get("counterparty")):
            key = "ok.airtime_own"
        if action == "refund" and not (_clean(p.get("merchant_name")) or _clean(p.get("merchant_code"))):
            key = "ok.refund_anon"
        return [c.text(key, **c.fields())]
    if action == "ownership_transfer":
        if p.get("pin"):
            return _welcome(c)
        return [c.text("ok.ownership_transfer", number=_display_number(p["msisdn"]),
                       held=format_amount(p.get("held") or 0))]
    if action == "sms_sent":
        return [c.text(f"ok.sms_sent.{p['what']}", number=_display_number(p["msisdn"]))]
    if action == "pin_reset":
        pin = p["pin"]
        if not isinstance(pin, str) or not pin:
            raise ValueError("pin")
        return [c.text("ok.pin_reset", pin=pin)]
    if action == "bind_card":
        last4 = _clean(p["last4"])
        if not last4:
            raise ValueError("last4")
        card = c.t.get(f"card.{p.get('card_type')}", c.t["card.any"])
        return [c.text("ok.bind_card", last4=last4, card=card)]
    if action == "kyc_tier":
        tier = p["tier"]
        if not _is_count(tier):
            raise ValueError("tier")
        return [c.text("ok.kyc_tier", tier=tier)]
    if action == "number_change":
        return [c.text("ok.number_change", number=_display_number(p["msisdn"]))]
    if action == "cancel_number":
        held = ""
        if _is_count(r.balance) and r.balance > 0:
            held = c.text("ok.cancel_number_held", balance=format_amount(r.balance))
        return [c.text("ok.cancel_number", held=held)]
    if action is not None and f"ok.{action}" in c.t:
        return [c.text(f"ok.{action}", **c.fields())]
    raise KeyError("action")


def _display_number(msisdn: Any) -> str:
    """E.164 digits -> the national form the subscriber knows."""
    if not isinstance(msisdn, str) or not msisdn.isdigit():
        raise ValueError("msisdn")
    try:
        return local_form(msisdn)
    except Exception:  # noqa: BLE001 - phonenumbers parse errors: show the digits
        return msisdn


def _welcome(c: _Context) -> list[str]:
    """Opening confirmed: a welcome, then the initial credentials on their
    own, so the subscriber can delete that message after changing them."""
    messages = [c.text("ok.confirm_open", bal=c.fields()["bal"])]
    pin = c.params.get("pin")
    if isinstance(pin, str) and pin:
        password = c.params.get("password")
        pw = c.text("ok.password", password=password) if isinstance(password, str) and password else ""
        messages.append(c.text("ok.credentials", pin=pin, password=pw))
    return messages


_STATEMENT_KINDS = {
    ZH: {"topup": "充值", "withdrawal": "提现", "withdraw": "提现", "payment": "支付",
         "pay": "支付", "p2p_in": "转入", "p2p_out": "转出", "receive": "转入",
         "send": "转出", "airtime": "话费", "fee": "手续费", "cash_in": "存现",
         "refund": "退款", "reversal": "冲正", "close": "销户", "close_refund": "销户退款",
         "ownership_hold": "过户暂存", "agent_float": "备付金"},
    EN: {"topup": "Topup", "withdrawal": "Withdraw", "withdraw": "Withdraw",
         "payment": "Pay", "pay": "Pay", "p2p_in": "Recv", "p2p_out": "Sent",
         "receive": "Recv", "send": "Sent", "airtime": "Airtime", "fee": "Fee",
         "cash_in": "Cash in", "refund": "Refund", "reversal": "Reversal",
         "close": "Close", "close_refund": "Close", "ownership_hold": "Held",
         "agent_float": "Float"},
}
_DATE_RE = re.compile(r"\d{4}-(\d{2})-(\d{2})")


def _line_field(line: Any, name: str) -> Any:
    if isinstance(line, Mapping):
        return line.get(name)
    return getattr(line, name, None)


def _local_date(at: Any, tz: tzinfo) -> str:
    """ISO 8601 (UTC when no offset is given) -> `MM-DD` in the display zone."""
    if not isinstance(at, str):
        return ""
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        m = _DATE_RE.match(at)
        return f"{m.group(1)}-{m.group(2)}" if m else ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.astimezone(tz).strftime("%m-%d")
    except (OverflowError, ValueError):
        return when.strftime("%m-%d")


def _statement_line(line: Any, lg: str, tz: tzinfo = DEFAULT_TZ) -> str:
    """`03-21 支付 -12.50 福彩中心`: date, kind, signed amount, other party."""
    t = _T[lg]
    date = _local_date(_line_field(line, "at"), tz)
    kind = str(_line_field(line, "kind") or "")
    label = _STATEMENT_KINDS[lg].get(kind, kind)
    amount = _line_field(line, "amount")
    signed = (("+" if amount > 0 else "") + format_amount(amount)) if _is_count(amount) else ""
    counterparty = _clean(_line_field(line, "counterparty"))
    if counterparty.lower() == "bank card":
        counterparty = t["stmt.card"]
    elif counterparty.lower() in (kind.lower(), label.lower()):
        counterparty = ""              # `话费 -50.00 airtime` says it twice
    counterparty = counterparty[:16]
    state = _line_field(line, "state")
    mark = t["stmt.pending"] if state == "pending" else t["stmt.voided"] if state in ("voided", "void") else ""
    parts = [p for p in (date, label, signed + mark, counterparty) if p]
    return " ".join(parts)


def _statement(c: _Context) -> list[str]:
    """Newest first, packed into messages of at most five lines that fit one
    SMS where they can; the header opens the first, the next-page hint ends
    the last."""
    p = c.params
    lines = p.get("lines") or []
    if not isinstance(lines, (list, tuple)):
        raise TypeError("lines")
    page, pages = p.get("page", 1), p.get("pages")
    if not lines:
        return [c.t["stmt.no_more" if _is_count(page) and page > 1 else "stmt.empty"]]

    def newest_first(line: Any) -> str:
        at = _line_field(line, "at")
        return at if isinstance(at, str) else ""
    ordered = sorted(lines, key=newest_first, reverse=True)
    rows = [_statement_line(line, c.lg, c.tz) for line in ordered]
    if _is_count(page) and _is_count(pages) and pages > 1:
        header = c.text("stmt.header", page=page, pages=pages)
    else:
        header = c.t["stmt.header_1"]
    footer = None
    if _is_count(page) and _is_count(pages) and page < pages:
        footer = c.text("stmt.more", next=page + 1)
    return _pack(header, rows, footer)


def _pack(header: str, rows: list[str], footer: str | None) -> list[str]:
    """At most five transaction lines per message: the channel sends a longer
    message as a concatenated SMS, and five lines still read as one screen."""
    chunks = [rows[i:i + STATEMENT_LINES_PER_MESSAGE]
              for i in range(0, len(rows), STATEMENT_LINES_PER_MESSAGE)]
    chunks[0] = [header, *chunks[0]]
    if footer:
        chunks[-1] = [*chunks[-1], footer]
    return ["\n".join(chunk) for chunk in chunks]


def _confirm_required(c: _Context) -> list[str]:
    if c.action in ("open", "confirm_open", None):
        return [c.text("confirm.open", within=c.within())]
    return [c.text("confirm.any", phrase=c.phrase(), within=c.within())]


def _pin_required(c: _Context) -> list[str]:
    if c.action is None:
        raise KeyError("action")
    if c.action == "sp_request":
        return [_sp_text(c, "sp.ask")]
    if c.action == "sp_choose":
        tags = [_clean(t) for t in c.params["tags"] if _clean(t)]
        if not tags:
            raise ValueError("tags")
        return [c.text("sp.choose", tags=", ".join(tags), first=tags[0])]
    return [c.text("pin.any", phrase=c.phrase(), within=c.within())]


def _sp_text(c: _Context, key: str) -> str:
    """An SP payment request's text: the tag names it, the order is the merchant's."""
    tag, order = _clean(c.params["tag"]), _clean(c.params["order_id"])
    if not tag or not order:
        raise KeyError("tag")
    return c.text(key, tag=tag, order=order, amount=c.money(c.result.amount), merchant=c.fields()["merchant"])


def _in_progress(c: _Context) -> list[str]:
    if c.action is None:
        raise KeyError("action")
    if c.action == "close" and c.result.amount:
        return [c.text("progress.close", **c.fields())]
    return [c.text("progress.any", ref=c.fields()["ref"], phrase=c.phrase())]


def _bank_declined(c: _Context) -> list[str]:
    reason = c.params.get("reason")
    if isinstance(reason, BankDecline):
        reason = reason.value
    if reason not in {d.value for d in BankDecline}:
        reason = BankDecline.OTHER.value
    reason_text = c.t[f"decline.{reason}"]
    ref = c.fields()["ref"]
    if c.action is not None:
        return [c.text("bank_declined", ref=ref, phrase=c.phrase(), reason=reason_text)]
    return [c.text("bank_declined_any", ref=ref, reason=reason_text)]


def _bank_unavailable(c: _Context) -> list[str]:
    if c.action is None:
        raise KeyError("action")
    return [c.text("bank_unavailable", ref=c.fields()["ref"], phrase=c.phrase())]


def _balance_not_zero(c: _Context) -> list[str]:
    if c.params.get("reason") == "in_flight":
        return [c.t["balance_in_flight"]]
    return [c.text("balance_not_zero", balance=c.money(c.result.balance))]


def _pin_format(c: _Context) -> list[str]:
    if c.params.get("weak") is True:
        return [c.t["pin_weak"]]
    raise KeyError("weak")


def _invalid_amount(c: _Context) -> list[str]:
    return [c.text("invalid_refund", refundable=c.money(c.params["refundable"]))]


def _account_exists(c: _Context) -> list[str]:
    status = c.params["status"]
    if status in ("frozen", "pending"):
        return [c.t[f"exists_{status}"]]
    raise KeyError("status")


def _with_balance(key: str):
    def handler(c: _Context) -> list[str]:
        return [c.text(key, balance=c.money(c.result.balance))]
    return handler


def _with_limit(key: str):
    def handler(c: _Context) -> list[str]:
        return [c.text(key, limit=c.money(c.params["limit"]))]
    return handler


def _not_withdrawable(c: _Context) -> list[str]:
    return [c.text("not_withdrawable", withdrawable=c.money(c.params["withdrawable"]))]


def _no_card(c: _Context) -> list[str]:
    if c.params.get("need") == "debit":
        return [c.text("no_debit_card")]
    raise KeyError("need")          # the outcome's fixed text


def _velocity(c: _Context) -> list[str]:
    seconds = c.params["retry_after"]
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
        raise ValueError("retry_after")
    if seconds < 60:
        wait = c.text("wait.seconds", n=max(1, math.ceil(seconds)))
    else:
        wait = c.text("wait.minutes", n=math.ceil(seconds / 60))
    return [c.text("velocity_hold", wait=wait)]


def _risk(key: str):
    def handler(c: _Context) -> list[str]:
        if c.action is None:
            raise KeyError("action")
        f = c.fields()
        return [c.text(key, ref=f["ref"], phrase=c.phrase(), bal=f["bal"])]
    return handler


def _pin_wrong(c: _Context) -> list[str]:
    left = c.params["attempts_left"]
    if not _is_count(left) or left < 1:
        raise ValueError("attempts_left")
    if left == 1:
        return [c.t["pin_wrong_last"]]
    return [c.text("pin_wrong", attempts_left=left)]


def _pin_locked(c: _Context) -> list[str]:
    minutes = c.params["locked_minutes"]
    if not _is_count(minutes) or minutes < 1:
        raise ValueError("locked_minutes")
    return [c.text("pin_locked", locked_minutes=minutes)]


def _unknown_merchant(c: _Context) -> list[str]:
    code = _clean(c.params["merchant_code"])
    if not code:
        raise KeyError("merchant_code")
    return [c.text("unknown_merchant", merchant_code=code)]


def _merchant_inactive(c: _Context) -> list[str]:
    name = _clean(c.params.get("merchant_name")) or _clean(c.params["merchant_code"])
    if not name:
        raise KeyError("merchant_name")
    return [c.text("merchant_inactive", merchant=name)]


def _unknown_recipient(c: _Context) -> list[str]:
    who = _clean(c.params["counterparty"])
    if not who:
        raise KeyError("counterparty")
    return [c.text("unknown_recipient", counterparty=who)]


def _malformed(c: _Context) -> list[str]:
    name = c.params["usage"]
    return [c.text("malformed", usage=USAGE[c.lg][name])]


def _idempotency(c: _Context) -> list[str]:
    differs = c.params["differs"]
    if isinstance(differs, str) or not differs:
        raise ValueError("differs")
    return [c.text("idempotency_conflict", differs=", ".join(_clean(d) for d in differs))]


_HANDLERS = {
    Outcome.OK: _ok,
    Outcome.CONFIRM_REQUIRED: _confirm_required,
    Outcome.PIN_REQUIRED: _pin_required,
    Outcome.IN_PROGRESS: _in_progress,
    Outcome.BANK_DECLINED: _bank_declined,
    Outcome.BANK_UNAVAILABLE: _bank_unavailable,
    Outcome.INSUFFICIENT_FUNDS: _with_balance("insufficient_funds"),
    Outcome.BALANCE_NOT_ZERO: _balance_not_zero,
    Outcome.PIN_FORMAT: _pin_format,
    Outcome.INVALID_AMOUNT: _invalid_amount,
    Outcome.ACCOUNT_EXISTS: _account_exists,
    Outcome.NOT_WITHDRAWABLE: _not_withdrawable,
    Outcome.NO_CARD: _no_card,
    Outcome.LIMIT_PER_TXN: _with_limit("limit_per_txn"),
    Outcome.LIMIT_DAILY: _with_limit("limit_daily"),
    Outcome.LIMIT_MONTHLY: _with_limit("limit_monthly"),
    Outcome.VELOCITY_HOLD: _velocity,
    Outcome.RISK_HELD: _risk("risk.held"),
    Outcome.RISK_REFUSED: _risk("risk.refused"),
    Outcome.PIN_WRONG: _pin_wrong,
    Outcome.PIN_LOCKED: _pin_locked,
    Outcome.UNKNOWN_MERCHANT: _unknown_merchant,
    Outcome.MERCHANT_INACTIVE: _merchant_inactive,
    Outcome.UNKNOWN_RECIPIENT: _unknown_recipient,
    Outcome.MALFORMED: _malformed,
    Outcome.IDEMPOTENCY_CONFLICT: _idempotency,
}


def _detail_reason(err: ParseError, t: dict[str, str]) -> str:
    detail = err.detail or "other"
    if err.missing and f"detail.{detail}_missing" in t:
        return t[f"detail.{detail}_missing"]
    return t.get(f"detail.{detail}", t["detail.other"])
