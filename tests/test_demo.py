"""`make run` (telecom-pay demo) from a fresh directory, as a newcomer uses
it: the daemon beside the SMSC, bank and AMI simulators; then the two
commands the README promises, a call that hears the balance and a USSD
dial whose first key shows the balance page, and the web login page.
Every port is a free one, so the test runs beside a demo someone left
running."""
import re
import time
import subprocess

from tests.demokit import CLI, start_demo


def test_make_run_then_call_and_dial_hear_the_balance(tmp_path):
    demo = start_demo(tmp_path)
    http, agi, web = demo.http, demo.agi, demo.web
    try:
        out = demo.printed
        assert "demo account: 13800138000" in out
        assert re.search(rf"IVR \(FastAGI\) on port {agi}", out), out
        assert f"telecom-pay handset call 13800138000 --keys 1,0 --agi tcp:127.0.0.1:{agi}" in out

        call = subprocess.run([*CLI, "handset", "call", "13800138000", "--keys", "1,0",
                               "--agi", f"tcp:127.0.0.1:{agi}"], capture_output=True, text=True, timeout=60)
        assert call.returncode == 0, call.stdout + call.stderr
        heard = call.stdout.splitlines()
        # the home menu, then after 1 the balance (the demo account has 0.00) and the menu again
        assert heard[0].startswith("手机支付 余额 请按 1"), heard
        assert any(line.startswith("余额查询 余额 0 元") for line in heard), heard
        assert "感谢使用" in call.stdout

        dial = subprocess.run([*CLI, "handset", "--control", f"http://127.0.0.1:{http}", "dial", "13800138000",
                               "*188#", "--keys", "1"], capture_output=True, text=True, timeout=60)
        assert dial.returncode == 0, dial.stdout + dial.stderr
        pages = dial.stdout.split("--------------------")
        assert "1 余额" in pages[0] and "9 人工服务" in pages[0], dial.stdout
        assert "余额 0.00 元" in pages[-1], dial.stdout

        # the web handset's call keypad: the same call through the SMSC simulator's control API
        import json
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{http}/handsets/13800138000/call", method="POST",
                                     data=json.dumps({"keys": "1,0", "wait": 30}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.loads(resp.read())
        said = [text for kind, text in body["log"] if kind == "heard"]
        pressed = [text for kind, text in body["log"] if kind == "pressed"]
        assert pressed == ["1", "0"] and body["hung_up_by"] == "platform", body
        assert "余额查询" in said and "感谢使用, 再见" in said, said
        req = urllib.request.Request(f"http://127.0.0.1:{http}/handsets/13800138000/call", method="POST",
                                     data=json.dumps({"keys": 5}).encode(), headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError("keys that are not text were accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400

        # the web interface: its URL printed, the login page at its root, a development user logs in
        assert f"web: http://127.0.0.1:{web}/" in out, out
        assert "DEVELOPMENT DEFAULT web users: agent1 / counter-dev-2026 (agent)" in out, out
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=30) as resp:
            page = resp.read().decode()
            assert resp.url.endswith("/login") and '<form method="post" action="/login"' in page
        req = urllib.request.Request(f"http://127.0.0.1:{web}/api/v1/session", method="POST",
                                     data=json.dumps({"username": "admin", "password": "operate-dev-2026"}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read())["role"] == "ops_admin"

        # the sample shop: its URL printed, its catalogue served on its own port
        shop = re.search(r"^sample shop: (http://127\.0\.0\.1:(\d+)/)$", out, re.M)
        assert shop and int(shop.group(2)) not in (http, agi, web), out
        with urllib.request.urlopen(shop.group(1), timeout=30) as resp:
            assert "Sample shop" in resp.read().decode()

        # airtime: HF pays the airtime SP, whose top-up system (the demo's stand-in)
        # gets the signed order and tops the number up, once
        since = demo.inbox_size("13800138000")
        demo.send("13800138000", "CZ 50")
        _, since = demo.wait_sms("13800138000", since, "密码")
        demo.send("13800138000", "147258")
        _, since = demo.wait_sms("13800138000", since, "成功", timeout=60)
        demo.send("13800138000", "HF 20 13900139000")
        _, since = demo.wait_sms("13800138000", since, "密码")
        demo.send("13800138000", "147258")
        receipt, _ = demo.wait_sms("13800138000", since, "20.00")
        assert "话费" in receipt and "139****9000" in receipt, receipt
        topups_url = demo.printed_url("carrier top-up system") + "/topups.json"
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(topups_url, timeout=30) as resp:
                made = json.loads(resp.read())["topups"]
            if made or time.monotonic() > deadline:
                break
            time.sleep(0.2)       # the sender's retry loop, seen from outside
        assert [(t["msisdn"], t["amount"], t["ref"]) for t in made] == [("8613900139000", 2000, receipt.split()[0])]
    finally:
        code = demo.stop()
    assert code == 0
