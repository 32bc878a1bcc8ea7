package main

import "strings"

// S3 Express One Zone directory buckets are named
// BASE--ZONE--x-s3, where ZONE is the ID of the availability zone (or
// Local Zone) that holds the bucket: use1-az4, usw2-az1, cnn1-pkx1-az1. The
// first part of a zone ID names its region, by the convention of EC2's
// zone IDs. The SDK builds a directory bucket's endpoint from the zone and
// the configured region without checking that they agree, so a wrong
// region is a host that does not exist.

// zoneRegions maps the region part of a zone ID to its region: the regions
// that have S3 Express One Zone, and the others by EC2's convention.
var zoneRegions = map[string]string{
	"use1": "us-east-1", "use2": "us-east-2", "usw1": "us-west-1", "usw2": "us-west-2",
	"cac1": "ca-central-1", "caw1": "ca-west-1", "sae1": "sa-east-1", "mxc1": "mx-central-1",
	"euw1": "eu-west-1", "euw2": "eu-west-2", "euw3": "eu-west-3", "euc1": "eu-central-1", "euc2": "eu-central-2",
	"eun1": "eu-north-1", "eus1": "eu-south-1", "eus2": "eu-south-2",
	"aps1": "ap-south-1", "aps2": "ap-south-2", "apne1": "ap-northeast-1", "apne2": "ap-northeast-2", "apne3": "ap-northeast-3",
	"apse1": "ap-southeast-1", "apse2": "ap-southeast-2", "apse3": "ap-southeast-3", "apse4": "ap-southeast-4",
	"apse5": "ap-southeast-5", "apse7": "ap-southeast-7", "ape1": "ap-east-1",
	"mes1": "me-south-1", "mec1": "me-central-1", "ilc1": "il-central-1", "afs1": "af-south-1",
	"usge1": "us-gov-east-1", "usgw1": "us-gov-west-1", "cnn1": "cn-north-1", "cnnw1": "cn-northwest-1",
}

// isDirectoryBucket reports whether bucket names an S3 Express One Zone
// directory bucket.
func isDirectoryBucket(bucket string) bool {
	return strings.HasSuffix(bucket, "--x-s3") || strings.HasSuffix(bucket, "--xa-s3")
}

// bucketZone returns the zone of a directory bucket and the region it is in
// ("" if the zone's region is not one this table knows), or "", "" for any
// other bucket.
func bucketZone(bucket string) (zone, region string) {
	if !isDirectoryBucket(bucket) {
		return "", ""
	}
	parts := strings.Split(bucket, "--")
	if len(parts) < 3 {
		return "", ""
	}
	zone = parts[len(parts)-2]
	code, _, _ := strings.Cut(zone, "-")
	return zone, zoneRegions[code]
}

// clientRegion is the region the S3 client signs for and builds endpoints
// in. configured is the region the settings give (-s3-region, AWS_REGION,
// the AWS profile; "" if none), endpoint the custom endpoint ("" for AWS).
// On AWS a directory bucket's zone decides, whatever is configured: no
// other region can reach it. With a custom endpoint the configured region
// is what that endpoint expects, and the zone's only fills in for none.
func clientRegion(bucket, configured, endpoint string) string {
	_, zoneRegion := bucketZone(bucket)
	switch {
	case zoneRegion != "" && (endpoint == "" || configured == ""):
		return zoneRegion
	case configured != "":
		return configured
	}
	return "us-east-1" // S3-compatible servers rarely care
}
