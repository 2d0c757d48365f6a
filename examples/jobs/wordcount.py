"""Counts the words of a text file with Spark.

    spark-submit wordcount.py INPUT_FILE OUTPUT_DIR

Writes one CSV file (`word,count`, most frequent first) into OUTPUT_DIR,
replacing what was there. Used by examples/spark.toml.
"""

import sys
from operator import add

from pyspark.sql import SparkSession


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, output = argv[1], argv[2]
    spark = SparkSession.builder.appName("wordcount").getOrCreate()
    try:
        counts = (
            spark.sparkContext.textFile(source)
            .flatMap(lambda line: line.lower().split())
            .map(lambda word: (word.strip(".,;:!?\"'()"), 1))
            .filter(lambda pair: pair[0])
            .reduceByKey(add)
            .sortBy(lambda pair: (-pair[1], pair[0]))
        )
        frame = spark.createDataFrame(counts, ["word", "count"])
        frame.coalesce(1).write.mode("overwrite").option("header", True).csv(output)
        print(f"{frame.count()} distinct words of {source} written to {output}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
