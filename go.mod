module github.com/richardartoul/gobuildcache

go 1.26
