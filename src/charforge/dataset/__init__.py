"""From stored records to training data: SFT chat records, the Character-LLM
prompted format, statistics and exports."""
