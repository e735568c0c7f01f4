"""LineSight's Pulumi program: one `pulumi up` deploys a whole environment.

The stack config (Pulumi.yaml declares every key; Pulumi.<stack>.yaml sets them) is read
once; the parts live in infra/ (see infra/stack.py and docs/deploy.md).
"""

from infra.stack import main

main()
