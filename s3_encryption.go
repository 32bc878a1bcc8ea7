package main

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// s3Encryption is the server-side encryption that every object an
// S3Backend writes asks for (-s3-sse, -s3-sse-kms-key-id). The zero value
// asks for none: the bucket's default encryption applies, as it does to
// any object stored without these headers. A bucket policy that denies
// s3:PutObject without x-amz-server-side-encryption (or without a given
// KMS key) is why a user sets it; reads need nothing, since S3 decrypts
// SSE-S3 and SSE-KMS objects for anyone allowed to read them (and, for
// SSE-KMS, to use the key).
//
// Directory buckets take no encryption headers: their objects are
// encrypted as the bucket's default says, and the SDK's sessions may not
// override it (validate refuses -s3-sse for them).
type s3Encryption struct {
	Mode     types.ServerSideEncryption // "", AES256, aws:kms or aws:kms:dsse
	KMSKeyID string                     // with aws:kms or aws:kms:dsse; "" is the account's aws/s3 key
}

// s3EncryptionModes are the values -s3-sse takes, as S3 and the AWS CLI's
// --sse spell them.
var s3EncryptionModes = []string{
	string(types.ServerSideEncryptionAes256),
	string(types.ServerSideEncryptionAwsKms),
	string(types.ServerSideEncryptionAwsKmsDsse),
}

// apply sets e's headers on a PutObject. With SSE-KMS it also asks for an
// S3 Bucket Key, so that a cache's thousands of small objects do not each
// cost a request to KMS when written and read (KMS bills and throttles
// per request); DSSE-KMS takes no bucket key.
func (e s3Encryption) apply(in *s3.PutObjectInput) {
	if e.Mode == "" {
		return
	}
	in.ServerSideEncryption = e.Mode
	if e.KMSKeyID != "" {
		in.SSEKMSKeyId = aws.String(e.KMSKeyID)
	}
	if e.Mode == types.ServerSideEncryptionAwsKms {
		in.BucketKeyEnabled = aws.Bool(true)
	}
}
