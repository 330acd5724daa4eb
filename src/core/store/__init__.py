"""Where sessions live: an interface (`base`) and its DynamoDB implementation."""
