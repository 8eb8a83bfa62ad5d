#!/usr/bin/env python3
"""Drive keepwire's IBKR gateway emulator with ibind, a real IBKR client nobody here wrote.

Run by tests/interop_ibind.rs; runs by hand against `keepwire emulate --tls` too:

    python3 tests/interop/ibind_client.py \
        --base-url https://127.0.0.1:5000 --ws-url wss://127.0.0.1:5000/v1/api/ws \
        --admin-url http://127.0.0.1:5001 --cacert /tmp/keepwire-emulator-cert.pem

Every option also reads an environment variable (KEEPWIRE_EMU_BASE_URL, KEEPWIRE_EMU_WS_URL,
KEEPWIRE_EMU_ADMIN_URL, KEEPWIRE_EMU_CACERT, KEEPWIRE_EMU_CONID).

What it proves, with TLS verified against the emulator's own certificate (never verify=False):
  1. ibind's REST client (IbkrClient): tickle, auth status (ibind POSTs it), brokerage session
     init when the session is not authenticated, and the iserver/accounts preflight;
  2. ibind's socket client (IbkrWsClient): connects with the `api` session cookie ibind builds
     from tickle, reaches AUTHENTICATED from `sts`, subscribes market data (`smd`), sees the
     subscription confirmed and data flowing for the conid;
  3. the emulator drops the socket (admin API `{"fault":"drop_sockets"}`) and ibind's own
     reconnect brings the socket back, re-sends `smd` and data flows again;
  4. `tic` and `umd` on the way (ibind's keepalive and unsubscribe).

Exit status 0 on success; otherwise 1 with a `FAIL: <reason>` line on stderr (2 for usage errors).
Every wait is bounded; the whole run takes 6–12 s with ibind's default timings.
"""

import argparse
import json
import os
import sys
import threading
import time
import traceback
import urllib.request

# ibind reads its settings from the environment when it is imported. Defaults that suit a test
# run (the caller's environment wins): no log files in the temp directory, no signal handlers.
os.environ.setdefault('IBIND_LOG_TO_FILE', 'false')
os.environ.setdefault('IBIND_AUTO_REGISTER_SHUTDOWN', 'false')

# Upper bound of every single wait (the reconnect alone takes IBIND_WS_TIMEOUT, 5 s by default).
STEP_TIMEOUT = 15.0
# Upper bound of the whole run: well under the 60 s the Rust test allows.
TOTAL_TIMEOUT = 45.0


class InteropFailure(Exception):
    """A step that did not happen as a real IBKR gateway would make it happen."""


class RecordingSink:
    """An ibind EventSink that keeps every event, so the script can wait for one.

    ibind calls emit() from its own threads; waiters block on a condition variable (no sleeps).
    """

    def __init__(self):
        self._events = []
        self._cond = threading.Condition()

    def emit(self, event):
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def mark(self):
        """A position in the event list: wait_for(..., after=mark) only looks at later events."""
        with self._cond:
            return len(self._events)

    def wait_for(self, predicate, what, timeout=STEP_TIMEOUT, after=0):
        """(position, event) of the first event from position `after` on that satisfies
        `predicate`; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for position in range(after, len(self._events)):
                    if predicate(self._events[position]):
                        return position, self._events[position]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = ', '.join(type(e).__name__ for e in self._events[after:][-12:])
                    raise InteropFailure(f'timed out after {timeout:.0f} s waiting for {what} (last events: {seen or "none"})')
                self._cond.wait(left)


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--base-url', default=env('KEEPWIRE_EMU_BASE_URL'), help='gateway base URL, e.g. https://127.0.0.1:5000')
    p.add_argument('--ws-url', default=env('KEEPWIRE_EMU_WS_URL'), help='socket URL, e.g. wss://127.0.0.1:5000/v1/api/ws')
    p.add_argument('--admin-url', default=env('KEEPWIRE_EMU_ADMIN_URL'), help='admin API base URL, e.g. http://127.0.0.1:5001')
    p.add_argument('--cacert', default=env('KEEPWIRE_EMU_CACERT'), help="PEM file of the emulator's self-signed certificate")
    p.add_argument('--conid', default=env('KEEPWIRE_EMU_CONID', '265598'), help='contract id to stream (default 265598)')
    args = p.parse_args()
    missing = [name for name in ('base_url', 'ws_url', 'admin_url', 'cacert') if not getattr(args, name)]
    if missing:
        p.error('missing: ' + ', '.join('--' + m.replace('_', '-') for m in missing))
    if not os.path.isfile(args.cacert):
        p.error(f'--cacert {args.cacert!r} is not a file')
    return args


def admin(admin_url, path, body=None):
    """GET (or POST `body` as JSON to) the emulator's admin API (plain HTTP on loopback)."""
    req = urllib.request.Request(
        admin_url.rstrip('/') + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={'Content-Type': 'application/json'},
        method='GET' if body is None else 'POST',
    )
    with urllib.request.urlopen(req, timeout=5) as res:
        return json.loads(res.read())


def inject_fault(admin_url, fault):
    """Injects one fault now (POST /admin/faults)."""
    answer = admin(admin_url, '/admin/faults', fault)
    if not answer.get('ok'):
        raise InteropFailure(f'admin API refused {fault}: {answer}')


def wait_for_counter(admin_url, name, at_least, what, timeout=STEP_TIMEOUT):
    """Polls GET /admin/counters (bounded) until counter `name` reaches `at_least`."""
    deadline = time.monotonic() + timeout
    while True:
        value = admin(admin_url, '/admin/counters').get(name, 0)
        if value >= at_least:
            return value
        if time.monotonic() > deadline:
            raise InteropFailure(f'timed out after {timeout:.0f} s waiting for {what} (counter {name} = {value})')
        time.sleep(0.05)


def check(condition, message):
    if not condition:
        raise InteropFailure(message)


def run(args):
    # Imported here so that a missing ibind is reported by main() with the install command.
    from ibind import IbkrClient, IbkrWsClient, WsState, events
    from ibind.subscriptions import BindingStatus, MarketDataSubscription
    from ibind.ws.ws_subscriptions import SubscriptionUpdated

    rest_url = args.base_url.rstrip('/') + '/v1/api/'
    # cacert = the emulator's certificate: requests and websocket-client verify the chain and
    # the IP address 127.0.0.1 against it, exactly as against a real gateway's certificate.
    client = IbkrClient(url=rest_url, cacert=args.cacert, timeout=5, max_retries=1, auto_register_shutdown=False)

    # 1. REST: tickle, auth status, brokerage session, accounts preflight.
    tickle = client.tickle().data
    check(isinstance(tickle, dict) and tickle.get('session'), f'tickle has no session id: {tickle}')
    check('authStatus' in tickle.get('iserver', {}), f'tickle has no iserver.authStatus: {tickle}')
    print(f'tickle: session ...{tickle["session"][-6:]}, authStatus {tickle["iserver"]["authStatus"]}')

    status = client.authentication_status().data
    print(f'auth status: {status}')
    if not client.check_auth_status():
        # What a person's program does after 2FA: complete the brokerage session handshake.
        init = client.initialize_brokerage_session(compete=True).data
        print(f'ssodh/init: {init}')
        check(client.check_auth_status(), f'still not authenticated after ssodh/init: {client.authentication_status().data}')
    check(client.check_health(), 'tickle does not report a healthy session (authenticated, connected, not competing)')

    accounts = client.receive_brokerage_accounts().data
    check(accounts.get('accounts'), f'iserver/accounts lists no account: {accounts}')
    account_id = accounts['accounts'][0]
    print(f'accounts: {accounts["accounts"]}')

    # 2. The socket, driven entirely by ibind.
    sink = RecordingSink()
    ws = IbkrWsClient(
        url=args.ws_url,
        ibkr_client=client,
        account_id=account_id,
        cacert=args.cacert,
        sink=sink,
        # Events reach the sink from ibind's runtime thread, in order, without another queue.
        synchronous_output_events=True,
    )
    try:
        check(ws.start(), f'IbkrWsClient did not reach AUTHENTICATED (state {ws.get_state()})')
        print('socket: authenticated')

        # `tic`, the socket keepalive: ibind waits for a reply whose lastAccessed changed.
        tic = ws.tic()
        check(tic and tic.get('topic') == 'tic', f'no tic reply: {tic}')

        subscription = MarketDataSubscription(conid=str(args.conid), fields=['31', '84', '86'])
        key = subscription.binding_key()

        def is_data(event):
            return isinstance(event, events.MarketData) and event.conid == str(args.conid) and bool(event.data)

        def is_active(event):
            return isinstance(event, SubscriptionUpdated) and event.binding_key == key and event.status == BindingStatus.ACTIVE

        handle = ws.subscribe(subscription)
        check(handle.wait(STEP_TIMEOUT), f'smd subscription not confirmed (status {handle.status})')
        _, data = sink.wait_for(is_data, f'market data for conid {args.conid}')
        print(f'market data: {data.data}')

        # 3. The emulator drops the socket (no close frame); ibind must notice and reconnect by itself.
        before_drop = sink.mark()
        inject_fault(args.admin_url, {'fault': 'drop_sockets'})
        print('fault injected: drop_sockets')
        sink.wait_for(
            lambda e: isinstance(e, SubscriptionUpdated) and e.binding_key == key and e.status != BindingStatus.ACTIVE,
            'ibind to notice the dropped socket',
            after=before_drop,
        )
        reconnected_at, _ = sink.wait_for(
            lambda e: isinstance(e, events.WsAuthenticated), 'ibind to reconnect and authenticate a new socket', after=before_drop
        )
        sink.wait_for(is_active, 'the smd subscription to be confirmed again on the new socket', after=reconnected_at)
        _, data = sink.wait_for(is_data, f'market data for conid {args.conid} after the reconnect', after=reconnected_at)
        print(f'reconnected; market data: {data.data}')
        check(ws.get_state() == WsState.AUTHENTICATED, f'socket not authenticated after the reconnect: {ws.get_state()}')

        # 4. Unsubscribe (`umd`, which IBKR does not acknowledge) and wait until the emulator saw it.
        umd_before = admin(args.admin_url, '/admin/counters').get('umd', 0)
        check(ws.unsubscribe(subscription).wait(STEP_TIMEOUT), 'umd not sent')
        wait_for_counter(args.admin_url, 'umd', umd_before + 1, 'the emulator to receive umd')
    finally:
        # ibind closes the socket from this thread while websocket-client's reader thread waits in
        # select() on it. The emulator answers the close and ends the connection within
        # milliseconds, but the reader often misses that wake-up (its file descriptor is closed
        # under it) and only notices at its next ping timeout, so ibind reports that its transport
        # thread did not stop within IBIND_WS_TIMEOUT. That race is the client's own; the run has
        # proved what it set out to by then, so it is only reported.
        if not ws.shutdown():
            print('note: ibind reported an incomplete shutdown of its socket threads', file=sys.stderr)
        client.close()


def main():
    args = parse_args()
    try:
        import ibind  # noqa: F401
    except ImportError:
        print('ibind is missing: install it with: python3 -m pip install ibind', file=sys.stderr)
        return 1

    # The whole run is bounded: a watchdog ends the process should ibind block somewhere unexpected.
    def overdue():
        print(f'FAIL: the interop run exceeded {TOTAL_TIMEOUT:.0f} s', file=sys.stderr, flush=True)
        os._exit(1)

    watchdog = threading.Timer(TOTAL_TIMEOUT, overdue)
    watchdog.daemon = True
    watchdog.start()
    started = time.monotonic()
    try:
        run(args)
    except InteropFailure as e:
        print(f'FAIL: {e}', file=sys.stderr)
        return 1
    except Exception as e:  # an ibind exception is a finding too: report it, then where it came from
        print(f'FAIL: {type(e).__name__}: {e}', file=sys.stderr)
        traceback.print_exc()
        return 1
    finally:
        watchdog.cancel()
    print(f'OK: ibind drove the emulator over TLS, through a dropped socket, in {time.monotonic() - started:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
