"""`push-edge MODEL_DIR --host BROKER --device ID|--all`: send a model to running detectors over MQTT.

Publishes model.tflite + model.json (+ calibration.npz) as one `device.update.payload` message, QoS 1, to
`<base_topic>/<device>/model/set` (or `<base_topic>/all/model/set`), waits until the broker has it, and with
`--wait S` until the device(s) report the outcome in their retained `<base_topic>/<device>/model` status.
Device-side safe: paho-mqtt and the standard library only (no TensorFlow, no interpreter).
Prints one line; exit 0 on success, 1 on failure, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from edge_oneclass.device.errors import EX_RUNTIME, EX_USAGE, BrokerError, EdgeError, ModelError
from edge_oneclass.device.mqtt.config import MqttConfig
from edge_oneclass.device.update.check import FilesRefused, check_files
from edge_oneclass.device.update.payload import CARD_FILE, MODEL_FILE, PayloadError, encode, read_model_dir

PROG = "push-edge"


def local_check(files: dict[str, bytes]) -> dict[str, Any]:
    """The card of the folder, after the checks the device itself makes (a wrong folder fails here first)."""
    try:
        check_files(files)
    except FilesRefused as exc:
        raise ModelError(f"{exc}; push a folder written by one export-edge run (or --force to let the device "
                         f"refuse it)") from None
    return json.loads(files[CARD_FILE])


class UsageError(EdgeError):
    """Options that cannot make a broker connection (a TLS file that is not there, ...)."""

    exit_code = EX_USAGE


def broker_config(args: argparse.Namespace) -> MqttConfig:
    """The options as the daemon's `[mqtt]` settings: the same checks, client and TLS set-up."""
    try:
        return MqttConfig(host=args.host, port=args.port, base_topic=args.base_topic, device_id="push-edge",
                          discovery=False, keepalive=max(30, int(args.timeout) + 5), username=args.username,
                          password_env=args.password_env, password_file=args.password_file, tls=args.tls,
                          ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
                          tls_insecure=args.tls_insecure)
    except ValueError as exc:
        raise UsageError(str(exc)) from None



class Push:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.where = f"{args.host}:{args.port}"
        from edge_oneclass.device.mqtt.client import CLI_HINTS, make_client  # paho: named if missing (main)

        self.broker = broker_config(args)
        self.client = make_client(self.broker, f"push-edge-{uuid.uuid4().hex[:8]}", password=args.password,
                                  hints=CLI_HINTS)
        self.subscribed = threading.Event()
        self.cond = threading.Condition()
        self.statuses: dict[str, dict[str, Any]] = {}      # device -> status answering our push
        self.known: set[str] = set()                         # devices whose retained model status we saw
        self.offline: set[str] = set()                       # devices whose retained status is `offline`
        self.push_id = uuid.uuid4().hex
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message

    def _on_message(self, client, userdata, message) -> None:
        device = message.topic.split("/")[-2]
        if message.topic.endswith("/status"):
            with self.cond:
                (self.offline.add if message.payload == b"offline" else self.offline.discard)(device)
            return
        try:
            status = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(status, dict):
            return
        with self.cond:
            if status.get("push_id") == self.push_id:
                self.statuses[device] = status
            elif message.retain:
                self.known.add(device)
            self.cond.notify_all()

    def connect(self) -> None:
        from edge_oneclass.device.mqtt.client import CLI_HINTS, connect_and_wait

        connect_and_wait(self.client, self.broker, self.args.timeout, CLI_HINTS)
        self.client.loop_start()

    def run(self, payload_files: dict[str, bytes], card: dict[str, Any]) -> tuple[bool, str]:
        args = self.args
        target = "all" if args.all else args.device
        set_topic = f"{args.base_topic}/{target}/model/set"
        payload, _ = encode(payload_files, self.push_id)
        self.connect()
        try:
            if args.wait:
                who = target if not args.all else "+"
                self.client.subscribe([(f"{args.base_topic}/{who}/model", 1), (f"{args.base_topic}/{who}/status", 1)])
                if not self.subscribed.wait(args.timeout):
                    raise BrokerError(f"MQTT broker at {self.where} did not confirm the status subscription")
                time.sleep(0.3)          # retained statuses tell which devices exist (for --all)
            info = self.client.publish(set_topic, payload, qos=1)
            try:
                info.wait_for_publish(args.timeout)
            except (RuntimeError, ValueError) as exc:
                raise BrokerError(f"the broker at {self.where} did not take the model ({exc})") from None
            if not info.is_published():
                raise BrokerError(f"the broker at {self.where} did not acknowledge the model within "
                                  f"{args.timeout:g} s (message too large for it? mosquitto's message_size_limit)")
            sha = card["sha256"][:12]
            what = f"{card.get('label')!r} {sha}… ({len(payload)} bytes) to {set_topic}"
            if not args.wait:
                return True, f"pushed {what}"
            return self._wait(what, card["sha256"])
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def _wait(self, what: str, sha: str) -> tuple[bool, str]:
        args = self.args
        deadline = time.monotonic() + args.wait
        with self.cond:
            while True:
                expected = {args.device} if not args.all else self.known - self.offline
                answered = set(self.statuses)
                if not args.all and (answered or args.device in self.offline):
                    break
                if args.all and expected and expected <= answered:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.2))
            statuses = dict(self.statuses)
            expected = {args.device} if not args.all else (self.known - self.offline) | set(statuses)
        ok = sorted(d for d, s in statuses.items() if s.get("status") == "ok" and s.get("sha256") == sha)
        refused = {d: s.get("reason") or s.get("status") for d, s in statuses.items() if d not in ok}
        silent = sorted(expected - set(statuses) - self.offline)
        offline = sorted(expected & self.offline - set(statuses)) if not args.all else []
        parts = []
        if ok:
            parts.append(f"{', '.join(ok)} now run{'s' if len(ok) == 1 else ''} it")
        for device, reason in sorted(refused.items()):
            parts.append(f"{device} refused it: {reason}")
        for device in offline:
            parts.append(f"{device} is offline (its retained status says so) and will not get this push; "
                         "push again when it is back")
        if silent:
            parts.append(f"no answer within {args.wait:g} s from {', '.join(silent)}")
        if not statuses and not silent and not offline:
            parts.append(f"no device answered within {args.wait:g} s")
        success = bool(ok) and not refused and not silent and not offline
        return success, f"pushed {what}; " + "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Send a model (export-edge's folder) to running edge-device "
                                                       "detectors over MQTT; they check it and swap it in.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="folder with model.tflite, model.json (, calibration.npz)")
    p.add_argument("--host", required=True, help="MQTT broker host")
    p.add_argument("--port", type=int, default=None, help="broker port (default 1883, 8883 with --tls)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID", help="the device's [mqtt] device_id")
    target.add_argument("--all", action="store_true", help="every device listening under --base-topic")
    p.add_argument("--base-topic", default="edge", help="the devices' [mqtt] base_topic (default edge)")
    p.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for the device(s) to report the new model (default: do not wait)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the broker (connect, publish; default 10)")
    p.add_argument("--force", action="store_true", help="send even if the local hash check fails")
    auth = p.add_argument_group("authentication and TLS (as the daemon's [mqtt] keys)")
    auth.add_argument("--username")
    secret = auth.add_mutually_exclusive_group()
    secret.add_argument("--password", help="the password (visible in `ps`; prefer --password-file/--password-env)")
    secret.add_argument("--password-file", metavar="FILE")
    secret.add_argument("--password-env", metavar="VAR")
    auth.add_argument("--tls", action="store_true")
    auth.add_argument("--ca-file", metavar="FILE")
    auth.add_argument("--cert-file", metavar="FILE")
    auth.add_argument("--key-file", metavar="FILE")
    auth.add_argument("--tls-insecure", action="store_true", help="do not check the broker's host name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.port is None:
        args.port = 8883 if args.tls else 1883
    if not 1 <= args.port <= 65535:
        parser.error(f"--port {args.port} is out of range 1..65535")
    if args.wait < 0 or args.timeout <= 0:
        parser.error("--wait must be zero or more and --timeout more than zero seconds")
    if (args.ca_file or args.cert_file or args.key_file or args.tls_insecure) and not args.tls:
        parser.error("--ca-file/--cert-file/--key-file/--tls-insecure need --tls")
    if (args.password or args.password_file or args.password_env) and not args.username:
        parser.error("a password needs --username")
    if args.device is not None and (not args.device or any(c in args.device for c in "/+#")):
        parser.error(f"--device {args.device!r} must be a device_id (no '/', '+' or '#')")
    try:
        files = read_model_dir(args.model_dir)
        try:
            card = local_check(files)
        except ModelError:
            if not args.force:
                raise
            card = json.loads(files[CARD_FILE]) if files.get(CARD_FILE) else {}
            card.setdefault("sha256", hashlib.sha256(files[MODEL_FILE]).hexdigest())
        ok, line = Push(args).run(files, card)
    except PayloadError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_RUNTIME
    except EdgeError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_USAGE if isinstance(exc, UsageError) else EX_RUNTIME
    except ImportError as exc:
        print(f"{PROG}: {exc.name} is not installed; pip install paho-mqtt", file=sys.stderr)
        return EX_RUNTIME
    print(f"{PROG}: {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else EX_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
