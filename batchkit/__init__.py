"""The plumbing every batch stage of the three packages shares.

errors (UserError, RecordError), files (atomic writes, strict JSON, contained
paths, safe names), cli (parser with one-line errors and --debug, number
checks, the runner that turns errors into exit codes), batch (tally, one
`error:` line per bad record) and workers (process pools that die with their
parent and leave no temporary file).
"""
