"""Deployment commands: ``k8s render``, ``acl render|apply``, ``inventory``, ``keys``, ``dev sasl``.

Everything is rendered from the contracts in ``HANDRAIL_CONFIG_DIR`` (default ``config``).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from handrail.bus import acl
from handrail.bus.security import SaslCredentials
from handrail.contracts import Contracts, load_contracts
from handrail.errors import ContractError, HandrailError
from handrail.signing import KeyFileExists, SigningKey, TrustStore
from handrail.state import acl as redis_acl
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings
from handrail_deploy import acl_formats
from handrail_deploy.inventory import inventory
from handrail_deploy.kafka_admin import apply_acls
from handrail_deploy.render import render_files, stale_files, write_files

k8s_app = typer.Typer(no_args_is_help=True, help="Kubernetes manifests rendered from the contracts.")
acl_app = typer.Typer(no_args_is_help=True, help="Kafka principals and least-privilege ACLs from the contracts.")
keys_app = typer.Typer(no_args_is_help=True, help="Ed25519 signing keys for agents and services.")
redis_app = typer.Typer(no_args_is_help=True, help="Redis ACL users: one per service and agent, least privilege.")
sasl_app = typer.Typer(no_args_is_help=True, help="A local Kafka with SASL/SCRAM and ACLs enforced (port 19092).")

_PREFIX_HELP = "Topic prefix (default: HANDRAIL_TOPIC_PREFIX or 'handrail.')."


def _contracts(settings: CliSettings) -> Contracts:
    try:
        return load_contracts(settings.config_dir, default_registry().names())
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None


@k8s_app.command("render")
def k8s_render(
    out: Annotated[
        Path | None, typer.Option(help="Write the files here (e.g. k8s/base/generated); default: print YAML.")
    ] = None,
    check: bool = typer.Option(False, help="Exit 1 when the files in --out differ from a fresh render."),
) -> None:
    """Render one Deployment (+ ServiceAccount, Service, PDB, HPA) per service and per agent."""
    settings = CliSettings()
    try:
        files = render_files(_contracts(settings), settings.config_dir)
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None
    if out is None:
        console.print("\n---\n".join(t for n, t in files.items() if n != "kustomization.yaml"), end="", markup=False)
        return
    if check:
        stale = stale_files(files, out)
        if stale:
            err_console.print(f"[red]stale:[/red] {', '.join(stale)} in {out}: run `handrail k8s render --out {out}`")
            raise typer.Exit(ExitCode.FAILED)
        console.print(f"{out} is current ({len(files)} files)")
        return
    for change in write_files(files, out) or ["nothing changed"]:
        console.print(change)


class AclFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    KAFKA_ACLS = "kafka-acls"
    STRIMZI = "strimzi"


@acl_app.command("render")
def acl_render(
    output_format: Annotated[AclFormat, typer.Option("--format", help="How to print the ACLs.")] = AclFormat.TABLE,
    prefix: str = typer.Option(None, help=_PREFIX_HELP),
    bootstrap: str = typer.Option(
        None, help="--format kafka-acls: the broker (default: $KAFKA_BOOTSTRAP at run time)."
    ),
    command_config: str = typer.Option("admin.properties", help="--format kafka-acls: a super user's client config."),
    cluster: str = typer.Option("kafka", help="--format strimzi: the Strimzi Kafka cluster name."),
    namespace: str = typer.Option("handrail", help="--format strimzi: the namespace of the KafkaUsers."),
) -> None:
    """Print every principal's ACLs: an agent reads only its own topic and writes steps, events, audit, dlq."""
    settings = CliSettings()
    principals = acl.principals(_contracts(settings), Topics(prefix or settings.topic_prefix))
    rules = acl.bindings(principals)
    if output_format == AclFormat.JSON:
        console.print(acl_formats.as_json(rules), end="", markup=False, highlight=False)
    elif output_format == AclFormat.KAFKA_ACLS:
        console.print(acl_formats.as_kafka_acls(rules, bootstrap, command_config), end="", markup=False)
    elif output_format == AclFormat.STRIMZI:
        console.print(acl_formats.as_strimzi_users(principals, cluster, namespace), end="", markup=False)
    else:
        table = Table("principal", "used by", "operation", "resource", "pattern")
        for principal in principals:
            for rule in principal.bindings():
                resource = f"{rule.resource_type.value.lower()} {rule.resource_name}"
                table.add_row(rule.kafka_principal, principal.runs, rule.operation.value, resource,
                              rule.pattern_type.value.lower())  # fmt: skip
        console.print(table)


@acl_app.command("apply")
def acl_apply(
    username: Annotated[str, typer.Option(help="A super user (SCRAM-SHA-512) allowed to create ACLs.")],
    password_file: Annotated[Path, typer.Option(help="A file holding that user's password.")],
    bootstrap: str = typer.Option(None, help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."),
    acls_file: Annotated[
        Path | None, typer.Option("--from", help="ACLs from `acl render --format json` (default: render).")
    ] = None,
    prefix: str = typer.Option(None, help=_PREFIX_HELP),
) -> None:
    """Create the ACLs on a SASL-enabled broker (idempotent)."""
    settings = CliSettings()
    if acls_file is not None:
        rules = acl_formats.parse_json(acls_file.read_text())
    else:
        rules = acl.bindings(acl.principals(_contracts(settings), Topics(prefix or settings.topic_prefix)))
    admin = SaslCredentials(username, password_file.read_text().strip())
    count = run(apply_acls(bootstrap or settings.kafka_bootstrap, admin, rules))
    console.print(f"{count} ACLs applied")


def inventory_command(as_json: bool = JsonOption) -> None:
    """Print the AI system inventory: agent, owner, purpose, models, tools, data access, autonomy, risk."""
    settings = CliSettings()
    entries = inventory(_contracts(settings), default_registry(), Topics(settings.topic_prefix))
    if as_json:
        print_json_lines(e.to_dict() for e in entries)
        return
    table = Table("agent", "owner", "purpose", "models", "tools", "data access", "autonomy", "risk", show_lines=True)
    for e in entries:
        tools = "\n".join(
            f"{t.name}{' (side effect)' if t.side_effect else ''}{' (approval)' if t.requires_approval else ''}"
            for t in e.tools
        )
        access = f"reads {', '.join(e.data_access['reads'])}\nwrites {', '.join(e.data_access['writes'])}"
        table.add_row(e.agent, e.owner, e.purpose, " -> ".join(e.model_chain), tools, access, e.autonomy, e.risk_class)
    console.print(table)


@keys_app.command("generate")
def keys_generate(
    signers: Annotated[list[str], typer.Argument(help="Agent or service names (router, validator, ...).")],
    out: Annotated[Path, typer.Option(help="Folder for <name>.pem (private, 0600) and <name>.pub.")] = Path("keys"),
    keep_existing: Annotated[
        bool, typer.Option(help="Keep the keys that are there and make only the missing ones (for start-up jobs).")
    ] = False,
) -> None:
    """Generate a signing key per signer; store the .pem as a secret, publish the .pub to the trust store.

    Exit codes: 0 done, 1 a key exists (without --keep-existing), 2 a name is not a valid signer.
    """
    for name in signers:
        try:
            key = SigningKey.generate(name)
            if keep_existing and (out / f"{name}.pem").exists():
                console.print(f"{name}: kept {out / f'{name}.pem'}")
                continue
            private = key.save(out)
        except HandrailError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(ExitCode.FAILED if isinstance(exc, KeyFileExists) else ExitCode.USAGE) from None
        console.print(f"{name}: key {key.key_id} -> {private}")


@keys_app.command("trust")
def keys_trust(folder: Annotated[Path, typer.Argument(help="A folder of <signer>.pub files.")]) -> None:
    """Print the trust store (JSON) for the .pub files in FOLDER: the handrail-trusted-keys ConfigMap's content."""
    try:
        store = TrustStore.from_file(folder)
    except HandrailError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None
    console.print(store.to_json(), end="", markup=False, highlight=False)


@redis_app.command("users")
def redis_users_command(
    out: Annotated[Path, typer.Option(help="Folder for users.acl and <user>.password (0600).")] = Path("redis-users"),
    prefix: Annotated[
        str | None, typer.Option(help="The deployment's key prefix (default HANDRAIL_REDIS_PREFIX).")
    ] = None,
    group_prefix: Annotated[
        str, typer.Option(help="Its consumer groups' prefix (HANDRAIL_GROUP_PREFIX).")
    ] = "handrail-",
) -> None:
    """Write the Redis ACL file of a deployment and each user's password (kept when already there).

    Start Redis with `--aclfile users.acl`; give each service and worker its user
    (HANDRAIL_REDIS_USERNAME, shown below) and password (HANDRAIL_REDIS_PASSWORD_FILE).
    """
    settings = CliSettings()
    contracts = _contracts(settings)
    users = redis_acl.redis_users(prefix or settings.redis_prefix, sorted(contracts.agents), group_prefix)
    passwords = redis_acl.passwords(out, [u.name for u in users])
    acl_path = out / "users.acl"
    # Readable by the Redis server's own user: it holds only sha256 digests of the passwords.
    acl_path.write_text(redis_acl.acl_file(users, passwords))
    acl_path.chmod(0o644)
    for user in users:
        console.print(f"{user.name}: password in {out / f'{user.name}.password'}", markup=False, highlight=False)
    console.print(f"ACL file: {acl_path}", markup=False, highlight=False)


@sasl_app.command("up")
def sasl_up(
    bootstrap: str = typer.Option("127.0.0.1:19092", help="The SASL listener; the controller uses the port + 1."),
    prefix: str = typer.Option(None, help=_PREFIX_HELP),
) -> None:
    """Start Kafka with SCRAM users for every principal, create the topics and apply the ACLs."""
    from handrail_dev import DevInfraError, DevSettings
    from handrail_dev.sasl import start_sasl_kafka

    settings = CliSettings()
    contracts = _contracts(settings)
    topics = Topics(prefix or settings.topic_prefix)
    principals = acl.principals(contracts, topics)
    dev = DevSettings(kafka_bootstrap=bootstrap)
    try:
        broker = start_sasl_kafka(dev, [p.name for p in principals])
    except DevInfraError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    # ACLs first: handrail-admin may create the topics only once its ACLs exist.
    count = run(apply_acls(bootstrap, broker.admin, acl.bindings(principals)))
    specs = topics.specs(contracts.agents, steps_retention_days=settings.steps_retention_days)
    created = run(ensure_topics(bootstrap, specs, credentials=broker.credentials(acl.ADMIN)))
    console.print(f"SASL Kafka at {bootstrap} (pid {broker.pid}): {len(created)} topics created, {count} ACLs applied")
    console.print(f"credentials (SCRAM-SHA-512): {broker.files.root / 'credentials.json'}")


@sasl_app.command("down")
def sasl_down(
    bootstrap: str = typer.Option("127.0.0.1:19092", help="The SASL listener it was started on."),
    wipe: bool = typer.Option(False, help="Also delete its data, users and credentials."),
) -> None:
    """Stop the SASL broker `up` started."""
    from handrail_dev import DevSettings
    from handrail_dev.sasl import stop_sasl_kafka

    stopped = stop_sasl_kafka(DevSettings(kafka_bootstrap=bootstrap), wipe=wipe)
    console.print("stopped" if stopped else "not running")
