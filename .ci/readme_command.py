"""Print one of the README's two commands: `main` (set up and train LeNet) or `tests`.

They are the first two ```sh blocks of README.md, in that order; CI runs the
second exactly as a user would paste it.
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands():
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    return {"main": blocks[0].strip(), "tests": blocks[1].strip()}


if __name__ == "__main__":
    print(readme_commands()[sys.argv[1]])
