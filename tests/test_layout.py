"""The core stays transport-free: checked from the source, so a violation fails the suite.

import-linter (run by `make test`) enforces the layer order inside chatservice;
this test adds what it cannot express: which Twisted modules the core may use
(stdlib, zope.interface, twisted.logger, twisted.internet.defer/.interfaces).
"""

import ast
import pathlib
import tempfile

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "chatservice"
CORE = sorted(path.stem for path in (PACKAGE / "core").glob("*.py")) + ["../frontends/reliable"]
ALLOWED_TWISTED = ("twisted.logger", "twisted.internet.defer", "twisted.internet.interfaces")


def imported_modules(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


class CoreImportsTests(SynchronousTestCase):
    def test_core_uses_only_allowed_twisted_modules(self):
        """No transport, no global reactor, no twisted.application in the core."""
        offenders = []
        for name in CORE:
            for module in imported_modules(PACKAGE / "core" / f"{name}.py"):
                if module.startswith("twisted") and not module.startswith(ALLOWED_TWISTED):
                    # "from twisted.internet import defer" names the parent package
                    if module in ("twisted.internet",):
                        continue
                    offenders.append((name, module))
        self.assertEqual(offenders, [])

    def test_the_detector_sees_a_violation(self):
        """The check itself works: a reactor import is reported."""
        with tempfile.TemporaryDirectory() as folder:
            sample = pathlib.Path(folder) / "sample.py"
            sample.write_text("from twisted.internet import reactor\n")
            self.assertIn("twisted.internet.reactor", list(imported_modules(sample)))
