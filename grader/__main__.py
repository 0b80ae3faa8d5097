"""`python -m grader` and the `grader` command."""

import gc
import sys


def main() -> int:
    """Run the CLI, its imports kept out of the garbage collector's way.

    The imports (SQLAlchemy, Alembic, Jinja2, nbclient, ...) make a few hundred thousand objects
    that live as long as the process. Collected while they are made, scanned again by every full
    collection of the batch and once more at exit, they cost about half a second of CPU per
    run (0.3 s of it at exit), which a batch of small notebooks feels. So they are made with the
    collector off, then frozen (gc.freeze: left out of every later collection); what grading
    makes is collected as usual."""
    gc.disable()
    try:
        from grader.cli import early

        early.start(sys.argv[1:])  # `grader run`: the batch's zygote imports beside what follows
        from grader.cli.main import main as cli_main
    finally:
        gc.freeze()
        gc.enable()
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
