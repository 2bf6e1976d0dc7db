"""Many runs into answers: comparisons, tables, statistics, reports, studies and search."""
