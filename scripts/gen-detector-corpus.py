#!/usr/bin/env python3
"""Generates the labelled corpora of the credential detector.

Every credential in it is a FAKE of the real format, generated here from a fixed seed (never a real
key); every lookalike is the kind of high-entropy or key-shaped text that is not a secret (UUIDs, git
hashes, digests, base64 images, lockfile integrity hashes, long identifiers, URLs, paths, prose,
minified code). Each line: {"text": ..., "expected": [kinds...], "group": ...}.

    python3 scripts/gen-detector-corpus.py > tests/data/detector/corpus.jsonl
    python3 scripts/gen-detector-corpus.py --holdout > tests/data/detector/holdout.jsonl

corpus.jsonl is the development set (the detector was tuned on it). holdout.jsonl comes from another
seed and adds contexts and lookalike kinds the detector was never tuned on (Stripe publishable keys,
go.sum hashes, IPFS CIDs, Kubernetes pod names, bcrypt hashes, source maps, TOML and header contexts);
its figures were recorded before any change made for it.
"""

import base64
import hashlib
import json
import random
import string
import sys
import uuid

HOLDOUT = "--holdout" in sys.argv
rng = random.Random(7_340_033 if HOLDOUT else 20261127)

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
AWS_ID = string.ascii_uppercase + "234567"


def rand(alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- credential generators (real formats, fake values) -------------------------------------------


def anthropic():
    kind = rng.choice(["api03", "api03", "admin01"])
    return f"sk-ant-{kind}-{rand(URLSAFE, 93)}AA"


def openai():
    form = rng.choice(["proj", "proj", "svcacct", "legacy", "legacy_t3"])
    if form == "proj":
        return f"sk-proj-{rand(URLSAFE, 74)}T3BlbkFJ{rand(URLSAFE, 74)}"
    if form == "svcacct":
        return f"sk-svcacct-{rand(URLSAFE, 74)}T3BlbkFJ{rand(URLSAFE, 74)}"
    if form == "legacy_t3":
        return f"sk-{rand(ALNUM, 20)}T3BlbkFJ{rand(ALNUM, 20)}"
    return f"sk-{rand(ALNUM, 48)}"


def stripe():
    prefix = rng.choice(["sk_live_", "sk_test_", "rk_live_", "rk_test_"])
    return prefix + rand(ALNUM, rng.choice([24, 99]))


def stripe_webhook():
    return "whsec_" + rand(ALNUM, 32)


def github():
    return rng.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + rand(ALNUM, 36)


def github_fine():
    return f"github_pat_{rand(ALNUM, 22)}_{rand(ALNUM, 59)}"


def gitlab():
    prefix = rng.choice(["glpat-", "glpat-", "gldt-", "glrt-"])
    return prefix + rand(URLSAFE, 20)


def aws_id():
    return rng.choice(["AKIA", "AKIA", "ASIA"]) + rand(AWS_ID, 16)


def aws_secret():
    return rand(B64, 40)


def google_api_key():
    return "AIza" + rand(URLSAFE, 35)


def pem_body(lines=8):
    return "\n".join(rand(B64, 64) for _ in range(lines)) + "\n" + rand(B64, 20) + "=="


def private_key():
    label = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
                        "ENCRYPTED PRIVATE KEY"])
    return f"-----BEGIN {label}-----\n{pem_body(rng.randint(3, 12))}\n-----END {label}-----"


def service_account():
    project = rng.choice(["consilio-prod", "odin-staging", "health-agent-412"])
    key = "-----BEGIN PRIVATE KEY-----\\n" + "\\n".join(rand(B64, 64) for _ in range(6)) + \
        "\\n-----END PRIVATE KEY-----\\n"
    return json.dumps({
        "type": "service_account",
        "project_id": project,
        "private_key_id": rand(HEX, 40),
        "private_key": key,
        "client_email": f"deployer@{project}.iam.gserviceaccount.com",
        "client_id": rand(string.digits, 21),
        "token_uri": "https://oauth2.googleapis.com/token",
    }, indent=2)


def cloudflare_token():
    return rand(URLSAFE, 40)


def cloudflare_global_key():
    return rand(HEX, 37)


def slack_token():
    prefix = rng.choice(["xoxb", "xoxp", "xoxa", "xoxs"])
    return f"{prefix}-{rand(string.digits, 12)}-{rand(string.digits, 13)}-{rand(ALNUM, 24)}"


def slack_webhook():
    return (f"https://hooks.slack.com/services/T{rand(AWS_ID, 8)}/B{rand(AWS_ID, 10)}/"
            f"{rand(ALNUM, 24)}")


def jwt():
    header = b64url(json.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}).encode())
    payload = b64url(json.dumps({
        "sub": str(rng.randint(1000, 99999)),
        "name": rng.choice(["Ada", "Linus", "Grace"]),
        "iat": rng.randint(1_600_000_000, 1_800_000_000),
    }).encode())
    sig = b64url(bytes(rng.getrandbits(8) for _ in range(32)))
    return f"{header}.{payload}.{sig}"


def password():
    return rand(ALNUM + "!#%^*", rng.randint(12, 24))


def random_token():
    return rand(ALNUM, rng.choice([32, 40, 48, 64]))


# --- contexts ------------------------------------------------------------------------------------

PROSE = [
    "Here is the key you asked for: {v} — please store it somewhere safe.",
    "I rotated it this morning, the new one is {v}",
    "{v}",
]


def contexts(env, field):
    return [
        f"export {env}={{v}}",
        f"{env}={{v}}",
        f'{field}: "{{v}}"',
        f'  "{field}": "{{v}}",',
        f'client = Client({field}="{{v}}")',
        f'const {field} = process.env.{env} || "{{v}}";',
        f'curl -H "Authorization: Bearer {{v}}" https://api.example.com/v1/items',
        f"2026-01-18T10:00:00Z INFO calling upstream with {field}={{v}} retries=3",
        "```\n{v}\n```",
    ] + PROSE


VENDORS = [
    ("anthropic_api_key", anthropic, "ANTHROPIC_API_KEY", "api_key"),
    ("openai_api_key", openai, "OPENAI_API_KEY", "api_key"),
    ("stripe_secret_key", stripe, "STRIPE_SECRET_KEY", "stripe_key"),
    ("stripe_webhook_secret", stripe_webhook, "STRIPE_WEBHOOK_SECRET", "webhook_secret"),
    ("github_token", github, "GITHUB_TOKEN", "token"),
    ("github_fine_grained_token", github_fine, "GH_TOKEN", "token"),
    ("gitlab_token", gitlab, "GITLAB_TOKEN", "private_token"),
    ("aws_access_key_id", aws_id, "AWS_ACCESS_KEY_ID", "aws_access_key_id"),
    ("google_api_key", google_api_key, "GOOGLE_API_KEY", "key"),
    ("slack_token", slack_token, "SLACK_BOT_TOKEN", "token"),
    ("slack_webhook", slack_webhook, "SLACK_WEBHOOK_URL", "webhook_url"),
    ("jwt", jwt, "SESSION_JWT", "id_token"),
]


def record(text, expected, group):
    return {"text": text, "expected": sorted(expected), "group": group}


def positives():
    out = []
    for kind, gen, env, field in VENDORS:
        ctxs = contexts(env, field)
        for i in range(24):
            out.append(record(ctxs[i % len(ctxs)].replace("{v}", gen()), [kind], "vendor"))
    # Context-dependent formats: the key name is what makes them recognisable.
    for i in range(20):
        ctx = [
            "aws_secret_access_key = {v}",
            "AWS_SECRET_ACCESS_KEY={v}",
            '"aws_secret_access_key": "{v}"',
            "export AWS_SECRET_ACCESS_KEY={v}",
        ][i % 4]
        out.append(record(f"[default]\naws_access_key_id = {aws_id()}\n" + ctx.replace("{v}", aws_secret()),
                          ["aws_access_key_id", "aws_secret_access_key"], "vendor"))
    for i in range(20):
        ctx = [
            "CLOUDFLARE_API_TOKEN={v}",
            "cloudflare_api_token: {v}",
            'export CF_API_TOKEN="{v}"',
            '"cloudflare_token": "{v}"',
        ][i % 4]
        out.append(record(ctx.replace("{v}", cloudflare_token()), ["cloudflare_api_token"], "vendor"))
    for i in range(8):
        ctx = ["CF_API_KEY={v}", "cloudflare_key: {v}"][i % 2]
        out.append(record(ctx.replace("{v}", cloudflare_global_key()), ["cloudflare_api_token"], "vendor"))
    for i in range(24):
        ctx = ["{v}", "key: |\n{v}", "ssh_key = \"\"\"\n{v}\n\"\"\"", "# deploy key\n{v}\n"][i % 4]
        out.append(record(ctx.replace("{v}", private_key()), ["private_key"], "vendor"))
    for _ in range(12):
        out.append(record(service_account(), ["google_service_account", "private_key"], "vendor"))
    # Generic: passwords in assignments and URLs, random tokens with and without a key name.
    for i in range(20):
        ctx = ['DB_PASSWORD={v}', 'password: "{v}"', '"client_secret": "{v}"',
               "SESSION_SECRET={v}"][i % 4]
        out.append(record(ctx.replace("{v}", password()), ["assigned_secret"], "generic"))
    for _ in range(12):
        out.append(record(f"DATABASE_URL=postgres://app:{password()}@db.internal:5432/app",
                          ["url_credentials"], "generic"))
    for i in range(16):
        ctx = ["webhook signing value {v}", "{v}", "- {v}", "token {v} expires tomorrow"][i % 4]
        out.append(record(ctx.replace("{v}", random_token()), ["high_entropy"], "generic"))
    return out


# --- lookalikes (no secret) ----------------------------------------------------------------------

LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
         "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
         "laboris nisi ut aliquip ex ea commodo consequat.")

WORDS = ["account", "service", "factory", "provider", "handler", "manager", "config", "request",
         "response", "default", "internal", "abstract", "singleton", "proxy", "builder", "registry",
         "controller", "repository", "transaction", "serializer", "validation", "permission"]


def identifier():
    parts = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
    style = rng.choice(["camel", "snake", "dotted", "kebab", "const"])
    if style == "camel":
        return parts[0] + "".join(p.capitalize() for p in parts[1:]) + str(rng.randint(0, 99))
    if style == "snake":
        return "_".join(parts)
    if style == "dotted":
        return "com.example." + ".".join(parts) + "Impl"
    if style == "const":
        return "_".join(p.upper() for p in parts)
    return "-".join(parts) + f"-{rng.randint(1, 9)}"


def png_base64(n=300):
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(n))).decode()


def minified_js():
    names = "abcdefghijklmnopqrstuvwxyz"
    parts = []
    for _ in range(12):
        a, b, c = (rng.choice(names) for _ in range(3))
        parts.append(rng.choice([
            f"function {a}({b},{c}){{return {b}&&{c}.{rng.choice(WORDS)}({b})}}",
            f"var {a}={b}({rng.randint(0, 999)}),{c}=Object.assign({{}},{a});",
            f"{a}.exports={{{rng.choice(WORDS)}:{b},{rng.choice(WORDS)}:{c}}};",
            f"if(!{a}||{a}.length<{rng.randint(2, 64)})throw new TypeError(\"{rng.choice(WORDS)}\");",
        ]))
    return "".join(parts)


def negatives():
    gens = [
        ("uuid", lambda: rng.choice(["id: {}", "request_id={}", '"uuid": "{}"', "{}"]).format(
            uuid.UUID(int=rng.getrandbits(128), version=4))),
        ("git_hash", lambda: rng.choice(["commit {}", "Merge {} into main", "{} fix: typo"]).format(
            rand(HEX, 40))),
        ("short_hash", lambda: f"HEAD is now at {rand(HEX, 7)} refactor {identifier()}"),
        ("sha256", lambda: rng.choice(["sha256sum: {}  release.tar.gz", "digest: sha256:{}",
                                       '"checksum": "{}"']).format(hashlib.sha256(rand(ALNUM, 20).encode()).hexdigest())),
        ("sha512", lambda: hashlib.sha512(rand(ALNUM, 20).encode()).hexdigest() + "  image.iso"),
        ("data_url", lambda: f'<img src="data:image/png;base64,{png_base64()}" alt="logo">'),
        ("data_url_css", lambda: f"background: url(data:image/svg+xml;base64,{png_base64(120)});"),
        ("base64_image_json", lambda: f'{{"thumbnail": "{png_base64(200)}", "width": 64}}'),
        ("npm_integrity", lambda: f'"integrity": "sha512-{base64.b64encode(hashlib.sha512(rand(ALNUM, 9).encode()).digest()).decode()}",'),
        ("sri", lambda: f'<script src="/app.js" integrity="sha384-{base64.b64encode(hashlib.sha384(rand(ALNUM, 9).encode()).digest()).decode()}" crossorigin></script>'),
        ("identifier", identifier),
        ("identifier_line", lambda: f"{identifier()} = new {identifier()}({identifier()});"),
        ("url", lambda: rng.choice([
            f"https://github.com/{rng.choice(WORDS)}/{identifier()}/blob/{rand(HEX, 40)}/src/main.rs#L{rng.randint(1, 400)}",
            f"https://cdn.example.com/assets/{rng.choice(WORDS)}.{rand(HEX, 8)}.chunk.js",
            f"https://www.youtube.com/watch?v={rand(URLSAFE, 11)}&list=PL{rand(URLSAFE, 32)}",
            f"https://storage.googleapis.com/{rng.choice(WORDS)}-bucket/{identifier()}/{rand(HEX, 32)}.tar.gz",
            f"https://example.com/search?q={'+'.join(rng.choice(WORDS) for _ in range(4))}&page={rng.randint(1, 9)}",
        ])),
        ("path", lambda: "/" + "/".join(rng.choice(WORDS) for _ in range(rng.randint(4, 8))) +
            rng.choice([".rs", ".ts", ".py", "/index.html", ".service"])),
        ("windows_path", lambda: "C:\\Users\\" + "\\".join(rng.choice(WORDS).capitalize() for _ in range(5)) + ".dll"),
        ("lorem", lambda: LOREM),
        ("minified_js", minified_js),
        ("placeholder", lambda: rng.choice([
            "API_KEY=your-api-key-here", 'password: "changeme"', "OPENAI_API_KEY=${OPENAI_API_KEY}",
            "api_token: secret:meta/cloudflare/api_token", "token: <paste your token>",
            "STRIPE_SECRET_KEY=sk_live_...", 'secret = "{{ vault_secret }}"',
            "password = os.environ['DB_PASSWORD']", "GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
        ])),
        ("docker", lambda: f"image: ghcr.io/{rng.choice(WORDS)}/{rng.choice(WORDS)}@sha256:{rand(HEX, 64)}"),
        ("semver", lambda: f"{identifier()} v{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}-rc.{rng.randint(1, 9)}"),
        ("log", lambda: f"2026-01-18T10:{rng.randint(10, 59)}:00.123Z DEBUG {identifier()} took {rng.randint(1, 999)}ms status=200 span={rand(HEX, 16)}"),
        ("ipv6", lambda: ":".join(rand(HEX, 4) for _ in range(8))),
        ("css_hash", lambda: f'<div class="css-{rand(string.ascii_lowercase + string.digits, 7)} {identifier()}">'),
        ("base64_text", lambda: base64.b64encode(rng.choice([LOREM, "hello world, this is a plain message"]).encode()).decode()),
    ]
    out = []
    for group, gen in gens:
        for _ in range(20):
            out.append(record(gen(), [], group))
    return out


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def holdout_positives():
    out = []
    ctxs = [
        'token = "{v}"',
        "Authorization: token {v}",
        "settings = {{'api_key': '{v}', 'timeout': 30}}",
        "[credentials]\nvalue = \"{v}\"",
        "   {v}   ",
        "> {v}",
    ]
    for kind, gen, _env, _field in VENDORS:
        for i in range(6):
            out.append(record(ctxs[i % len(ctxs)].replace("{v}", gen()), [kind], "vendor"))
    for _ in range(6):
        out.append(record(f"GET /v1/export?access_token={random_token()}&format=csv HTTP/1.1",
                          ["high_entropy"], "generic"))
    return out


def holdout_negatives():
    gens = [
        ("stripe_publishable", lambda: f"STRIPE_PUBLISHABLE_KEY=pk_live_{rand(ALNUM, 99)}"),
        ("go_sum", lambda: f"github.com/{rng.choice(WORDS)}/{rng.choice(WORDS)} v1.{rng.randint(0, 20)}.0 h1:{base64.b64encode(hashlib.sha256(rand(ALNUM, 8).encode()).digest()).decode()}"),
        ("ipfs_cid", lambda: f"ipfs://Qm{rand(B58, 44)}"),
        ("k8s_pod", lambda: f"pod/{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rand('bcdfghjklmnpqrstvwxz2456789', 10)}-{rand('bcdfghjklmnpqrstvwxz2456789', 5)} 1/1 Running"),
        ("bcrypt", lambda: f"$2b$12${rand(ALNUM + './', 53)}"),
        ("source_map", lambda: '{"version":3,"sources":["app.ts"],"mappings":"' + ";".join(
            ",".join(rand("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", rng.choice([4, 5, 6])) for _ in range(6)) for _ in range(8)) + '"}'),
        ("commit_url", lambda: f"see https://gitlab.com/{rng.choice(WORDS)}/{rng.choice(WORDS)}/-/commit/{rand(HEX, 40)}"),
        ("html", lambda: f'<link rel="stylesheet" href="/static/css/main.{rand(HEX, 8)}.css"><div id="{identifier()}">'),
    ]
    out = []
    for group, gen in gens:
        for _ in range(15):
            out.append(record(gen(), [], group))
    return out


def main():
    if HOLDOUT:
        for r in positives()[::3] + holdout_positives() + negatives()[::3] + holdout_negatives():
            print(json.dumps(r, ensure_ascii=False))
        return
    for r in positives() + negatives():
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
