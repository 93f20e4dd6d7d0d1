// blob/open_store.h — a BlobStore from a store URL (the daemon's --blob-store flag):
//
//   /var/lib/berth/blobs  or  local:/var/lib/berth/blobs         a local directory
//   swift://USER:KEY@HOST:PORT/CONTAINER[?auth=/auth/v1.0&segment=BYTES]   OpenStack Swift, v1 auth
//   s3://ACCESS:SECRET@HOST:PORT/BUCKET[?region=us-east-1&part=BYTES]      S3, path style, SigV4
//
// USER and ACCESS may contain ':' (Swift's account:user); the last ':' of the user part starts
// the secret. Percent-escapes are decoded. A secret left out of the URL is read from the
// environment variable BERTH_STORE_SECRET. Remote stores speak plain HTTP (loopback and private
// networks); errors name the URL part that is wrong and show the valid forms.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "blob/blob_store.h"

namespace berth::blob {

Result<std::unique_ptr<BlobStore>> open_store(const std::string& url);

}  // namespace berth::blob
