//! Operator CLI subcommands that work on files alone (config, schedule, cost estimate).
