"""`lorabake` command line: train, models make-tiny, generate, to-lora, datasets import, admin grant/revoke."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from trainer.families import DEFAULT_FAMILY, FAMILIES
from trainer.job.config import ConfigError
from trainer.training.callbacks import Callbacks, EpochSaved, PreviewsReady, Progress

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


class TerminalCallbacks(Callbacks):
    """A live bar on a terminal (step, loss, it/s, ETA); plain log lines otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        # looked up now: sys.stderr may have been replaced (or closed, or unset) since import
        self.stream = stream or sys.stderr or sys.__stderr__
        self.live = self.stream.isatty()
        self.bar = None
        self.last_line = 0.0

    def on_progress(self, p: Progress) -> None:
        if self.live:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=p.total_steps, file=self.stream, unit="step", dynamic_ncols=True)
            self.bar.n = p.step
            self.bar.set_postfix(epoch=f"{p.epoch}/{p.total_epochs}", loss=f"{p.loss:.4f}", lr=f"{p.lr:.2e}")
            return
        now = time.monotonic()
        if p.step == p.total_steps or now - self.last_line >= 5 or p.step == 1:
            self.last_line = now
            eta = f"{p.eta_seconds:.0f}s" if p.eta_seconds is not None else "?"
            self.on_log(f"step {p.step}/{p.total_steps} epoch {p.epoch}/{p.total_epochs} loss {p.loss:.4f} "
                        f"lr {p.lr:.2e} {p.images_per_sec:.2f} img/s eta {eta}")

    def on_epoch_saved(self, saved: EpochSaved) -> None:
        self.on_log(f"epoch {saved.epoch} saved: {saved.path} (mean loss {saved.mean_loss:.4f})")

    def on_previews(self, previews: PreviewsReady) -> None:
        self.on_log(f"epoch {previews.epoch} previews: {len(previews.paths)} image(s)")

    def on_log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)


def _train(args: argparse.Namespace) -> int:
    from trainer.job.config_io import load_config_file

    loaded = load_config_file(args.config, args.set)
    for note in loaded.ignored:
        print(f"ignored: {note}", file=sys.stderr)
    from trainer.training.ranks import train_processes

    result = train_processes(loaded.config, TerminalCallbacks())
    print(result.final_path or result.state_dir)
    return EXIT_OK


def _make_tiny(args: argparse.Namespace) -> int:
    from trainer.families.tiny import make_tiny, write_single_file

    out = make_tiny(args.out, args.family, args.seed)
    print(out)
    if args.single_file:
        try:
            print(write_single_file(out, args.family, args.single_file))
        except ValueError as exc:
            raise ConfigError([f"--single-file: {exc}"]) from None
    return EXIT_OK


def _generate(args: argparse.Namespace) -> int:
    from trainer.families import location_family, runtime
    from trainer.job.prompts import parse_prompt_line
    from trainer.output.generate import generate

    loras = {}
    for item in args.lora:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError([f'--lora "{item}": expected name=path'])
        loras[name] = path
    model = runtime(args.family or location_family(args.model)).load_location(args.model)
    spec = parse_prompt_line(args.prompt)
    notes: list[str] = []
    images = generate(model, spec, loras, seed=args.seed, count=args.count, default_size=(args.size, args.size),
                      notes=notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        image.save(out / f"gen_{k}.png")
        print(out / f"gen_{k}.png")
    return EXIT_OK


def _to_lora(args: argparse.Namespace) -> int:
    from trainer.families import location_family, runtime
    from trainer.networks.convert import convert_file

    model = runtime(args.family or location_family(args.model)).load_location(args.model)
    try:
        done = convert_file(model, Path(args.lora), Path(args.out), args.rank)
    except ValueError as exc:
        raise ConfigError([f"--lora: {exc}"]) from None
    print(f"{args.out}: a plain LoRA of rank {done.rank} over {done.modules} modules; it leaves out "
          f"{done.relative_error:.2%} of the update (worst module {done.worst_module}: {done.worst_error:.2%})")
    return EXIT_OK


def _import_dataset(args: argparse.Namespace) -> int:
    from core.dataset_client import ImportFailed, import_dataset

    source = Path(args.source)
    if not source.exists():
        print(f"{source}: no such folder or zip", file=sys.stderr)
        return EXIT_CONFIG
    try:
        answer, left_out = import_dataset(source, args.server, args.token, args.name)
    except ImportFailed as exc:
        print(f"import refused: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for line in left_out:
        print(f"left out  {line}")
    for entry in answer["report"]:
        print(f"{entry['status']:<9} {entry['entry']}" + (f": {entry['reason']}" if entry["reason"] else ""))
    dataset = answer["dataset"]
    print(f"dataset {dataset['id']} \"{dataset['name']}\": {answer['imported']} images imported")
    return EXIT_OK


def _admin(args: argparse.Namespace) -> int:
    """Run on the server, with its LORABAKE_* settings: the database is the service's own."""
    from core import audit, roles
    from core.db import migrate, session_factory
    from core.models import Role
    from core.settings import get_settings

    settings = get_settings()
    migrate(settings.db_url)
    role = Role.admin if args.admin_command == "grant" else Role.user
    with session_factory(settings.db_url)() as session:
        try:
            user = roles.set_role(session, args.email, role, audit.Actor(None, "server command line"))
        except roles.UnknownAccount as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        session.commit()
        print(f"{user.email} is now {'an admin' if role == Role.admin else 'a user'}")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lorabake", description="kohya-compatible LoRA training")
    commands = root.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a LoRA from a config file")
    train.add_argument("--config", required=True, help="sd-scripts TOML or LoRA_Easy_Training_Scripts JSON")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    train.set_defaults(run=_train)
    models = commands.add_parser("models", help="base model tools").add_subparsers(dest="models_command",
                                                                                   required=True)
    tiny = models.add_parser("make-tiny", help="write a tiny random-weight model (diffusers layout)")
    tiny.add_argument("out")
    tiny.add_argument("--family", choices=list(FAMILIES), default=DEFAULT_FAMILY)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--single-file", metavar="PATH", help="also write it as one original-layout .safetensors")
    tiny.set_defaults(run=_make_tiny)
    gen = commands.add_parser("generate", help="render a prompt that may contain <lora:name:weight>")
    gen.add_argument("--model", required=True)
    gen.add_argument("--family", choices=list(FAMILIES), help="the model's family (default: read from its folder)")
    gen.add_argument("--lora", action="append", default=[], metavar="NAME=PATH")
    gen.add_argument("--prompt", required=True, help="sd-scripts prompt line (--n --w --h --d --l --s)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--count", type=int, default=1)
    gen.add_argument("--size", type=int, default=512)
    gen.add_argument("--out", default="generated")
    gen.set_defaults(run=_generate)
    plain = commands.add_parser("to-lora", help="turn a DoRA / LoHa / LoKr file into a plain LoRA of a chosen rank "
                                "(applied the same way in every tool)")
    plain.add_argument("--model", required=True, help="the base model it was trained on")
    plain.add_argument("--family", choices=list(FAMILIES), help="the model's family (default: read from its folder)")
    plain.add_argument("--lora", required=True, help="the file to convert")
    plain.add_argument("--rank", type=int, default=32)
    plain.add_argument("--out", required=True)
    plain.set_defaults(run=_to_lora)
    datasets = commands.add_parser("datasets", help="dataset tools").add_subparsers(dest="datasets_command",
                                                                                     required=True)
    imp = datasets.add_parser("import", help="send a kohya-layout folder or zip to a lorabake server")
    imp.add_argument("source", help="a folder with N_concept/ subfolders (and an optional reg/), or a zip of one")
    imp.add_argument("--server", default=os.environ.get("LORABAKE_SERVER", "http://127.0.0.1:8000"))
    imp.add_argument("--token", default=os.environ.get("LORABAKE_TOKEN"), required="LORABAKE_TOKEN" not in os.environ,
                     help="a personal API token (Account page); or set LORABAKE_TOKEN")
    imp.add_argument("--name", help="dataset name (default: the folder or zip name)")
    imp.set_defaults(run=_import_dataset)
    admin = commands.add_parser("admin", help="roles, on the server (reads LORABAKE_* like the service)")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    for verb, what in (("grant", "give an account the admin role (the console)"),
                       ("revoke", "make an admin a plain user again")):
        command = admin_commands.add_parser(verb, help=what)
        command.add_argument("email")
        command.set_defaults(run=_admin)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        for message in exc.messages:
            print(f"config error: {message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the CLI reports any training failure as exit 1
        print(f"training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
