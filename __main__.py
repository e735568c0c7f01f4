"""LineSight's Pulumi program: one `pulumi up` deploys a whole environment.

The stack config (Pulumi.yaml declares every key; Pulumi.<stack>.yaml sets them) is read
once; the parts live in infra/ (see infra/stack.py and docs/deploy.md).
"""

import pulumi

from infra.package import PackageError
from infra.stack import main
from pipeline.stackconfig import ConfigError

try:
    main()
except (ConfigError, PackageError) as exc:
    # Pulumi prints a RunError's message alone; any other error comes with a traceback
    # and the program's source, with the message that names the key at the bottom.
    raise pulumi.RunError(str(exc)) from None
