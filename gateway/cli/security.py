"""``xgw keys …``, ``xgw seal``, ``xgw open``: partner onboarding and interop checks."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import orjson

from gateway.config import Settings
from gateway.devtools.vectors import (
    VectorSet,
    fresh_prefix,
    write_material_vectors,
    write_vectors,
)
from gateway.keystore import add_data_key, backend_for, load_data_keys, load_trust
from mappings.mapping import MappingError, pick_version
from security import envelope as env
from security.backend import CryptoBackend
from security.curve import DEFAULT_DISTID
from security.errors import PASSPHRASE_REQUIRED, SecurityError
from security.keys import (
    PrivateKey,
    generate_private_key,
    load_private_key,
    load_public_key,
    read_passphrase,
    write_private_key,
)
from security.replay import MemoryNonceStore
from security.sealing import Opener
from security.stream import CHUNK_BYTES, MaterialBroken, MaterialOpening
from security.trust import OwnKey, TrustedKey, TrustStore, Validity

PASSPHRASE_ENV = "XGW_KEY_PASSPHRASE"  # noqa: S105 - a variable name


def _add_passphrase_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file", type=Path, help="file whose first line is the passphrase"
    )
    parser.add_argument(
        "--passphrase-env",
        default=PASSPHRASE_ENV,
        metavar="VAR",
        help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV})",
    )


def _passphrase(args: argparse.Namespace) -> bytes | None:
    return read_passphrase(env_var=args.passphrase_env, file=args.passphrase_file)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecurityError("FILE_UNREADABLE", f"{path}: {exc.strerror}") from None


def _private(args: argparse.Namespace, settings: Settings) -> PrivateKey:
    return load_private_key(_read(args.key), _passphrase(args), backend_for(settings))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def cmd_keys_list(_args: argparse.Namespace, settings: Settings) -> int:
    store = load_trust(settings)
    now = datetime.now(UTC)
    rows = [["OWNER", "REGION", "KEY ID", "NOT BEFORE", "NOT AFTER", "STATUS", "FILE"]]
    for row in store.listing(now):
        rows.append(
            [
                row.owner,
                row.region,
                row.key_id,
                row.not_before.strftime("%Y-%m-%d %H:%M"),
                row.not_after.strftime("%Y-%m-%d %H:%M"),
                row.status,
                row.source,
            ]
        )
    print(_table(rows))
    return 0


def cmd_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    secret = _passphrase(args)
    if not secret:
        raise SecurityError(
            PASSPHRASE_REQUIRED,
            f"private keys are written encrypted: set {args.passphrase_env} or --passphrase-file",
        )
    key = generate_private_key(backend_for(settings))
    name = args.name or f"sm2-{key.key_id[:12]}"
    private_path, public_path = args.out / f"{name}.key.pem", args.out / f"{name}.pub.pem"
    write_private_key(private_path, key, secret)
    public_path.write_bytes(key.public.to_pem())
    print(f"key id  {key.key_id}\nprivate {private_path}\npublic  {public_path}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from gateway.keystore import rotate_own_key

    if min(args.starts_in_days, args.overlap_days) < 0 or args.valid_days <= 0:
        print("the days must be >= 0 (--valid-days > 0)", file=sys.stderr)
        return 2
    bundle = rotate_own_key(
        settings,
        timedelta(days=args.starts_in_days),
        timedelta(days=args.overlap_days),
        timedelta(days=args.valid_days),
    )
    args.bundle.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    new = bundle["keys"][0]
    print(
        f"new key {new['key_id']}: signs from {new['not_before']} (restart the gateway by "
        f"then); the current one retires {args.overlap_days:g} days later. Send {args.bundle} "
        "to every partner: it is signed by the current key."
    )
    return 0


def cmd_keys_import_bundle(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keystore import import_partner_bundle

    try:
        bundle = orjson.loads(args.file.read_bytes())
    except orjson.JSONDecodeError:
        print(f"{args.file}: not JSON", file=sys.stderr)
        return 1
    added = import_partner_bundle(settings, bundle, args.name)
    print(f"{len(added)} key(s) added for {bundle.get('region')}: {', '.join(added) or 'none new'}")
    return 0


def cmd_keys_show(args: argparse.Namespace, settings: Settings) -> int:
    data = _read(args.file)
    if b"PRIVATE KEY" in data:
        key = load_private_key(data, _passphrase(args), backend_for(settings))
        kind, public = "SM2 private key (PKCS#8)", key.public
    else:
        kind, public = "SM2 public key (SubjectPublicKeyInfo)", load_public_key(data)
    print(f"kind    {kind}\ncurve   sm2p256v1 (1.2.156.10197.1.301)")
    print(f"key id  {public.key_id}\npublic  {public.point.hex()}")
    return 0


def cmd_seal(args: argparse.Namespace, settings: Settings) -> int:
    backend = backend_for(settings)
    signer = _private(args, settings)
    recipient = load_public_key(_read(args.to))
    msg_id = args.msg_id or uuid.uuid4().hex
    header = env.Header(
        msg_id=msg_id,
        kind=args.kind,
        idem_key=args.idem_key or msg_id,
        sender=env.Party(
            args.sender_region or settings.region_code, args.sender_node or settings.node_id
        ),
        receiver=env.Party(args.receiver_region, args.receiver_node),
        matter=args.matter,
        created=env.now_utc(),
        content_type=args.content_type,
    )
    sealed = env.seal(
        _read(args.input), header, signer, recipient, backend, distid=args.distid.encode()
    )
    args.out.write_bytes(sealed.to_json())
    print(f"sealed {args.input} -> {args.out} (msg_id {sealed.msg_id})")
    return 0


def cmd_open(args: argparse.Namespace, settings: Settings) -> int:
    """Open as a receiving gateway does (envelope spec §6, the same ``Opener``): addressed to
    our jurisdiction, signed by the sender's key for its jurisdiction, fresh, then decrypted —
    so each refusal has the code the spec gives."""
    backend = backend_for(settings)
    envelope = env.envelope_from_json(_read(args.input))
    sender_key = load_public_key(_read(args.sender))
    sender_region = args.from_region or envelope.sender_region
    distid = args.distid.encode()
    trust = TrustStore(
        args.as_region or settings.region_code,
        settings.node_id,
        distid,
        [OwnKey(_private(args, settings), ALWAYS, str(args.key))],
        [TrustedKey(sender_key, str(args.sender), sender_region, distid, ALWAYS, str(args.sender))],
        {},
    )
    window = 1e12 if args.any_time else args.window or settings.replay_window_seconds
    now = env.parse_time(args.now) if args.now else env.now_utc()
    opened = asyncio.run(Opener(trust, backend, MemoryNonceStore(), window).open(envelope, now))
    given = _materials_given(args.material or [], envelope)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(opened.plaintext)
    checked = "" if args.from_region else "; jurisdiction not checked (give --from-region)"
    print(
        f"opened {args.input} -> {args.out}: signed by {envelope.sender_key_id[:16]}… "
        f"({envelope.sender_region}/{envelope.sender_node}), {len(opened.plaintext)} bytes"
        f"{checked}"
    )
    folder = args.materials_out or args.out.parent
    for entry in envelope.manifest:
        sealed = given.get(entry.code)
        if sealed is None:
            print(f"  material {entry.code}: {entry.kind}, {entry.size} bytes, not given")
            continue
        target = folder / f"{entry.code}.{entry.kind}"
        _open_material(sealed, target, opened.content_key, envelope.msg_id, entry, backend)
        print(f"  material {entry.code}: {entry.kind}, {entry.size} bytes, checked -> {target}")
    return 0


def _materials_given(pairs: list[str], envelope: env.Envelope) -> dict[str, Path]:
    """``CODE=FILE`` arguments, each naming a material of the envelope's manifest."""
    listed = {entry.code for entry in envelope.manifest}
    given: dict[str, Path] = {}
    for pair in pairs:
        code, equals, file = pair.partition("=")
        if not equals or not file:
            raise SecurityError("ARGUMENT_INVALID", f"--material {pair!r}: give CODE=FILE")
        if code not in listed:
            raise SecurityError(
                "MATERIAL_UNEXPECTED",
                f"{code!r} is not in the envelope's manifest"
                + (f" (it lists {', '.join(sorted(listed))})" if listed else " (it has none)"),
            )
        given[code] = Path(file)
    return given


def _open_material(
    sealed: Path,
    target: Path,
    content_key: bytes,
    msg_id: str,
    entry: env.ManifestEntry,
    backend: CryptoBackend,
) -> None:
    """Open one sealed material stream (as captured from the wire) against its manifest entry,
    a chunk at a time; the plaintext is kept only when the whole stream checks out."""
    opening = MaterialOpening(content_key, msg_id, entry, backend)
    partial = target.with_name(target.name + ".partial")
    try:
        source = sealed.open("rb")
    except OSError as exc:
        raise SecurityError("FILE_UNREADABLE", f"{sealed}: {exc.strerror}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with source, partial.open("wb") as out:
            while piece := source.read(CHUNK_BYTES):
                out.write(opening.add(piece))
            out.write(opening.finish())
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise SecurityError("FILE_UNWRITABLE", f"{target}: {exc.strerror}") from None
    except MaterialBroken as exc:
        partial.unlink(missing_ok=True)
        raise SecurityError(exc.code, exc.message) from None
    partial.replace(target)


def _sample_payload(settings: Settings, partner: str, code: str, on: date) -> bytes:
    """The SAMPLE example of the transform a partner's matter code uses, in its schema."""
    from gateway.assembly import registry_for
    from mappings.examples import example

    registry = registry_for(settings)
    try:
        version = pick_version(
            registry.versions(settings.region_code, partner), on, settings.region_code, partner
        )
    except (MappingError, KeyError):
        raise SecurityError(
            "MATTER_UNKNOWN", f"no mapping with {partner} is in force; give --in"
        ) from None
    for entry in version.entries.values():
        for target in entry.targets:
            if target.partner_code == code:
                transform = registry.transforms[target.transform]
                return orjson.dumps(transform.outbound(example(target.transform)))
    raise SecurityError(
        "MATTER_UNKNOWN", f"{code} maps to none of our matters with {partner}; give --in"
    )


def cmd_rotate_data_key(_args: argparse.Namespace, settings: Settings) -> int:
    load_data_keys(settings)  # the first key, if there was none: what was sealed stays readable
    path = add_data_key(settings)
    print(f"new data key {path.name}: seals from the next start; the older keys still open")
    return 0


def cmd_vectors_make(args: argparse.Namespace, settings: Settings) -> int:
    """Fresh vectors a partner signs with its own key, for a live receiver: sent within the
    window, ok.json is taken in and every other vector refused with its code."""
    backend = backend_for(settings)
    signer = _private(args, settings)
    now = env.now_utc().replace(microsecond=0)
    plaintext = (
        _read(args.input)
        if args.input
        else _sample_payload(settings, args.sender_region, args.matter, now.date())
    )
    receiver = env.Party(
        args.receiver_region or settings.region_code, args.receiver_node or settings.node_id
    )
    spec = VectorSet(
        env.Party(args.sender_region, args.sender_node),
        receiver,
        args.matter,
        plaintext,
        now,
        signer,
        load_public_key(_read(args.to)),
        idem_key=f"{args.sender_region}-{fresh_prefix()}",
        msg_prefix=fresh_prefix(),
    )
    keys = args.out / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "sender.pub.pem").write_bytes(signer.public.to_pem())
    extra = {
        "window_seconds": settings.replay_window_seconds,
        "receiver": {"region": receiver.region, "node": receiver.node, "key": None},
        "trusted_senders": [
            {"region": args.sender_region, "name": args.sender_region, "key": "keys/sender.pub.pem"}
        ],
    }
    if args.envelope == 2:  # each vector a message of its own, with the SAMPLE materials
        manifest = write_material_vectors(args.out, spec, backend, extra)
    else:
        manifest = write_vectors(args.out, spec, backend, extra)
    print(
        f"{len(manifest['vectors'])} XGW-ENV/{args.envelope} vectors in {args.out} (now "
        f"{manifest['now']}): send them within {manifest['window_seconds']:g} s; each one's "
        "expected answer is in manifest.json"
    )
    return 0


# Keys named on the command line carry no validity of their own.
ALWAYS = Validity(datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="list, generate and inspect SM2 keys")
    keys.set_defaults(handler=cmd_keys_list)
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    key_commands.add_parser("list", help="our keys and partners' keys with validity").set_defaults(
        handler=cmd_keys_list
    )
    generate = key_commands.add_parser("generate", help="new SM2 key pair (private encrypted)")
    generate.add_argument("--out", type=Path, required=True, help="directory to write into")
    generate.add_argument("--name", help="file name stem (default sm2-<key id prefix>)")
    _add_passphrase_options(generate)
    generate.set_defaults(handler=cmd_keys_generate)
    rotate = key_commands.add_parser(
        "rotate-data-key",
        help="a new data key seals personal data at rest from the next start; older ones still open",
    )
    rotate.set_defaults(handler=cmd_rotate_data_key)
    rotate_own = key_commands.add_parser(
        "rotate",
        help="a new signing key beside ours: it signs after --starts-in-days, the current one "
        "retires --overlap-days later; writes the signed trust bundle for partners",
    )
    rotate_own.add_argument(
        "--starts-in-days", type=float, default=14.0, help="time for partners to import it"
    )
    rotate_own.add_argument(
        "--overlap-days", type=float, default=14.0, help="the current key's life after that"
    )
    rotate_own.add_argument("--valid-days", type=float, default=730.0)
    rotate_own.add_argument("--bundle", type=Path, required=True, help="file to write")
    rotate_own.set_defaults(handler=cmd_keys_rotate)
    bundle = key_commands.add_parser(
        "import-bundle",
        help="a partner's new keys, with their validity, from a bundle signed by a key we trust",
    )
    bundle.add_argument("file", type=Path)
    bundle.add_argument("--name", required=True, help="the partner's name, for a new region")
    bundle.set_defaults(handler=cmd_keys_import_bundle)
    show = key_commands.add_parser("show", help="kind, key id and public point of a key file")
    show.add_argument("file", type=Path)
    _add_passphrase_options(show)
    show.set_defaults(handler=cmd_keys_show)

    seal = commands.add_parser("seal", help="seal a file into an XGW-ENV/1 envelope (JSON)")
    seal.add_argument("--to", type=Path, required=True, help="recipient public key")
    seal.add_argument("--key", type=Path, required=True, help="our private key (signs)")
    seal.add_argument("--in", dest="input", type=Path, required=True)
    seal.add_argument("--out", type=Path, required=True)
    seal.add_argument("--matter", default="SAMPLE-MATTER", help="matter code in the header")
    seal.add_argument("--kind", default="request")
    seal.add_argument("--msg-id")
    seal.add_argument("--idem-key")
    seal.add_argument("--sender-region")
    seal.add_argument("--sender-node")
    seal.add_argument("--receiver-region", default="411329")
    seal.add_argument("--receiver-node", default="xinye-gw")
    seal.add_argument("--content-type", default="application/json")
    seal.add_argument("--distid", default=DEFAULT_DISTID.decode(), help="our SM2 distinguishing ID")
    _add_passphrase_options(seal)
    seal.set_defaults(handler=cmd_seal)

    open_ = commands.add_parser(
        "open", help="verify and decrypt an envelope (XGW-ENV/1 or /2, with its materials)"
    )
    open_.add_argument("--key", type=Path, required=True, help="our private key (decrypts)")
    open_.add_argument("--from", dest="sender", type=Path, required=True, help="sender public key")
    open_.add_argument("--in", dest="input", type=Path, required=True)
    open_.add_argument("--out", type=Path, required=True)
    open_.add_argument(
        "--from-region",
        help="the sender key's jurisdiction (refused if the envelope claims another)",
    )
    open_.add_argument(
        "--as-region", help="the jurisdiction opening it (default: region_code, ours)"
    )
    open_.add_argument(
        "--distid", default=DEFAULT_DISTID.decode(), help="sender's distinguishing ID"
    )
    open_.add_argument(
        "--window",
        type=float,
        help="accepted skew of created, seconds (default: replay_window_seconds)",
    )
    open_.add_argument("--now", help="check against this time (ISO 8601 UTC), not the clock")
    open_.add_argument(
        "--any-time", action="store_true", help="no freshness check (an archived envelope)"
    )
    open_.add_argument(
        "--material",
        action="append",
        metavar="CODE=FILE",
        help="an XGW-ENV/2 material's sealed stream, opened against the manifest (repeatable)",
    )
    open_.add_argument(
        "--materials-out", type=Path, help="where opened materials go (default: --out's folder)"
    )
    _add_passphrase_options(open_)
    open_.set_defaults(handler=cmd_open)

    vectors = commands.add_parser("vectors", help="envelope test vectors (XGW-ENV/1 and /2)")
    vector_commands = vectors.add_subparsers(dest="vectors_command", metavar="ACTION")
    make = vector_commands.add_parser(
        "make", help="fresh vectors signed with your key for a live receiver"
    )
    make.add_argument("--key", type=Path, required=True, help="your private key (signs)")
    make.add_argument("--to", type=Path, required=True, help="the receiver's public key")
    make.add_argument("--sender-region", required=True, help="your jurisdiction")
    make.add_argument("--sender-node", required=True, help="your gateway node")
    make.add_argument("--matter", required=True, help="a matter code in your catalogue")
    make.add_argument("--in", dest="input", type=Path, help="payload (default: SAMPLE example)")
    make.add_argument("--receiver-region", help="default: region_code")
    make.add_argument("--receiver-node", help="default: node_id")
    make.add_argument("--out", type=Path, required=True, help="folder to write into")
    make.add_argument(
        "--envelope",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: the envelope's refusals; 2: XGW-ENV/2 messages with damaged material streams",
    )
    _add_passphrase_options(make)
    make.set_defaults(handler=cmd_vectors_make)

    def vectors_help(_args: argparse.Namespace, _settings: Settings) -> int:
        vectors.print_help()
        return 2

    vectors.set_defaults(handler=vectors_help)
