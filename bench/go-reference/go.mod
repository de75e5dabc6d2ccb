module pprofbench/goreference

go 1.19
