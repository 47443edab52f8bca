"""The local MariaDB server: configuration, data directory, and SQL operations."""
