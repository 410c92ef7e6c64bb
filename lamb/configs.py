"""The BERT configs and flagfiles of the repository's `configs/`, installed
with the package.

`bert_config_{tiny,base,large}.json` (model configs for `--bert_config_file`)
and `demo_cpu.flags`, `lamb_bert_large_phase{1,2}.flags` (for `--flagfile`).
The apps take these names as they are, from any folder:

    python -m lamb.run_pretraining --flagfile=demo_cpu.flags ...

A name is looked up here only when no such file exists (relative to the
working folder), so a file of your own always wins. `python -m lamb.configs`
prints the folder and the names, for copying one to edit.
"""

import argparse
import difflib
import os

# Installed, the repository's `configs/` is the data folder `lamb/_configs/`
# (setup.py); in a checkout it is read where it is.
_HERE = os.path.dirname(os.path.abspath(__file__))
FOLDER = next(
    folder
    for folder in (os.path.join(_HERE, "_configs"), os.path.join(os.path.dirname(_HERE), "configs"))
    if os.path.isdir(folder)
)
SUFFIXES = (".json", ".flags")


def names():
    """The names of the installed configs and flagfiles, sorted."""
    return sorted(name for name in os.listdir(FOLDER) if name.endswith(SUFFIXES))


def path(name):
    """The installed file `name`; `ValueError` listing the names (and the
    closest one) if there is none."""
    if name in names():
        return os.path.join(FOLDER, name)
    close = difflib.get_close_matches(name, names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name!r} is not an installed config; they are {names()}.{hint}")


def resolve(value):
    """`value` if it names an existing file (or is not a plain name), else
    the installed config of that name; unknown names are returned unchanged
    for the caller's own 'does not exist' error."""
    if not value or os.path.exists(value) or os.path.basename(value) != value:
        return value
    return os.path.join(FOLDER, value) if value in names() else value


def check_exists(value, flag):
    """`resolve(value)`, or `FileNotFoundError` naming `flag`, the installed
    configs and the closest one, if it is neither a file nor an installed name."""
    path = resolve(value)
    if "://" in path or os.path.exists(path):
        return path
    close = difflib.get_close_matches(os.path.basename(value), names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise FileNotFoundError(
        f"--{flag}={value} does not exist, and is not the name of an installed config "
        f"({', '.join(names())}).{hint}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lamb.configs",
        description="Prints the folder of the installed BERT configs and flagfiles and their "
        "names, which --bert_config_file and --flagfile take as they are.",
    )
    parser.parse_args(argv)
    print(f"Installed configs in {FOLDER}:")
    for name in names():
        print(f"  {name}")


if __name__ == "__main__":
    main()
