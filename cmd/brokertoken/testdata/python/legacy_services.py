"""Reads tokens from Redis the way the existing Python services do.

Run by cmd/brokertoken's python_test.go against the real daemon, a real redis-server
and the fake Tradovate; every check failing raises, so the script exits non-zero with
the reason. On success it prints one JSON object: the tokens it read (the Go test
checks each with the fake broker too).

    legacy_services.py read SPEC     the services' reads (SPEC is JSON, see below)
    legacy_services.py expired SPEC  after every key expired: nothing to read, the lists kept

SPEC: {"users": {USER: [ACCOUNT, ...]}, "absent": [ACCOUNT, ...], "lifetime": SECONDS,
       "rest_url": FAKE REST URL, "md_account": ACCOUNT or null}

Environment: REDIS_HOST, REDIS_PORT; SERVICE_USERNAME and SERVICE_PASSWORD (the ACL user
the services connect as: the README's legacy-reader role); BROKERTOKEN (the daemon
binary) with its REDIS_URL and BROKERTOKEN_PREFIX, for `brokertoken token --md`.
"""

import datetime
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import redis


class NoToken(Exception):
    pass


def get_token_from_redis(client, account):
    # As the trading services do: GET token:{account}, fail when it is missing.
    token = client.get(f"token:{account}")
    if not token:
        raise NoToken(f"No valid token found in Redis for account: {account}")
    return token


def first_with_token(client, accounts):
    # As the scripts that take a list of accounts do: the first that has a token.
    for account in accounts:
        token = client.get(f"token:{account}")
        if token:
            return account, token
    raise NoToken(f"No valid token found in Redis for any of {accounts}")


def broker_accepts(rest_url, token):
    # Authorization: Bearer <token>, as every service sends it.
    req = urllib.request.Request(rest_url + "/auth/me", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as e:
        return False


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    phase, spec = sys.argv[1], json.loads(sys.argv[2])
    host, port = os.environ["REDIS_HOST"], int(os.environ["REDIS_PORT"])
    svc = redis.Redis(host=host, port=port, username=os.environ["SERVICE_USERNAME"],
                      password=os.environ["SERVICE_PASSWORD"], decode_responses=True)
    admin = redis.Redis(host=host, port=port, decode_responses=True)
    users, absent = spec["users"], spec.get("absent") or []
    expected = sorted(f"token:{n}" for u, accounts in users.items() for n in [u] + accounts)
    out = {"read": {}, "md": None}

    if phase == "expired":
        check(svc.keys("token:*") == [], "KEYS token:* after every key expired")
        for user, accounts in users.items():
            for account in [user] + accounts:
                try:
                    get_token_from_redis(svc, account)
                    raise AssertionError(f"token:{account} still there")
                except NoToken:
                    pass
            # The list has no TTL: it outlives the tokens, as the original's did.
            check(admin.ttl(user) == -1, f"TTL of the {user} list is {admin.ttl(user)}, want -1")
            check(admin.lrange(user, 0, -1) == [f"token:{a}" for a in [user] + accounts],
                  f"the {user} list is {admin.lrange(user, 0, -1)}")
        print(json.dumps(out))
        return

    check(phase == "read", f"unknown phase {phase}")
    now = datetime.datetime.now()
    for user, accounts in users.items():
        # By sub-account and by user.
        for account in accounts + [user]:
            out["read"][f"token:{account}"] = get_token_from_redis(svc, account)
        account, token = first_with_token(svc, absent + accounts)
        check(account == accounts[0], f"first account with a token is {account}")
        for account in absent:
            check(svc.get(f"token:{account}") is None, f"token:{account} of a closed account is still there")

        # The original's other keys (nobody reads them, but they are as it wrote them).
        check(admin.get(f"auth:{user}"), f"auth:{user} missing")
        expiry = datetime.datetime.fromisoformat(admin.get(f"token_expiry:{user}"))
        check(expiry.tzinfo is None, f"token_expiry:{user} is not naive: {expiry}")
        check(expiry > now, f"token_expiry:{user} {expiry} is not after datetime.now() {now}")
        left = (expiry - now).total_seconds()
        check(left <= spec["lifetime"] + 5, f"token_expiry:{user} is {left}s away: not in the local zone?")
        check(admin.ttl(user) == -1, f"TTL of the {user} list is {admin.ttl(user)}, want -1")
        check(admin.lrange(user, 0, -1) == [f"token:{a}" for a in [user] + accounts],
              f"the {user} list is {admin.lrange(user, 0, -1)}")

    # KEYS token:* then GET each, as some scripts do.
    keys = sorted(svc.keys("token:*"))
    check(keys == expected, f"KEYS token:* gave {keys}, want {expected}")
    for key in keys:
        token = svc.get(key)
        check(token, f"{key} vanished")
        out["read"][key + " (KEYS)"] = token

    # Each token read works at the broker.
    for key, token in out["read"].items():
        check(broker_accepts(spec["rest_url"], token), f"the broker refuses the token of {key}")

    # The market-data token, as a script gets it: brokertoken token ACCOUNT --md.
    if spec.get("md_account"):
        md = subprocess.run([os.environ["BROKERTOKEN"], "token", spec["md_account"], "--md"],
                            capture_output=True, text=True, timeout=60)
        check(md.returncode == 0 and md.stdout.strip(), f"brokertoken token --md: {md.returncode} {md.stderr}")
        out["md"] = md.stdout.strip()
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, NoToken, redis.RedisError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
