"""driftrec's Kafka side: Faust app, topics, agents, the embedded runner and the CLI."""
