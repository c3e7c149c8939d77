# What `improve` learned from feedback: task id -> {repr(arguments): repr(expected)}.
MEMO = {}
