"""The circuit-breaker service: error-rate breakers per agent, tool and model, and halt announcements."""
