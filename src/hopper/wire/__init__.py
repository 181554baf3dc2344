"""The fast path: hopper's own lean HTTP for the two calls it makes at volume, Lambda Invoke
and S3 ListObjectsV2. A newcomer can skip it: the boto3 path (`--transport boto3`) does the
same, slower, and the tests hold both to the same items, outcomes and errors.

- transport: signing, one blocking keep-alive connection per thread (Channel), replies;
- mux: many requests in flight from one thread over non-blocking connections;
- listing: one list page as one signed GET and one parse;
- partition: a long listing split into key ranges listed at the same time.
"""
